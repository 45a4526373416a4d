"""The Kubeflow pipeline (KFP v2): validate inputs → search (unless a preset is named) → the
best trial as a preset file beside the run → batch restoration on Ray → comparison report and
summary metrics.

- `steps`: the work of each step as plain functions over the project's own code (no kfp);
- `rayjob`: a KubeRay RayJob built, created and polled with the kubernetes client;
- `components`: the lightweight ``@dsl.component`` wrappers that call `steps` in the image;
- `definition`: the ``@dsl.pipeline`` and `compile_pipeline` (infra/kubeflow/*.yaml).

``python -m pipeline.kubeflow compile`` rewrites the committed YAML.
"""
