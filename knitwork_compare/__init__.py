"""MLflow experiment comparison: gather runs from a tracking store (a parent run brings its
children), compare them as terminal tables (the params that differ, the metrics with the best
marked) and as one offline HTML report (plots, curves, image grids).

A library: it imports nothing from knitwork_cli, tune or pipeline, and the caller names the
tracking store (``compare.open_client(uri)``).

- ``compare``: reading the store and the comparison itself (``gather_runs``,
  ``build_comparison``).
- ``text``: the comparison as text for a terminal (``format_comparison``).
- ``report``, ``report_media``, ``report_plots``: the HTML page (``write_report``).
"""
