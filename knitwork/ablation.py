"""The paper's ablation (its Fig. 3) as configs: from the conventional coordinate MLP to the
full Knitwork, one component added per stage, every stage on the preset's own budget.

  mlp            the conventional coordinate MLP (``as_baseline``): one pixel per coordinate
  patches        + the preset's multi-scale patch output (``model.patches``); no reconstructor
                 (the image is each stack's finest centre element), so the only loss is the
                 patch reconstruction loss (eq. 1)
  consistency    + the cross-patch consistency loss (``loss.alpha`` and its ramp, eq. 2)
  reconstructor  + the preset's reconstructor and its pixel loss (``model.reconstructor``,
                 ``loss.beta``, eq. 3)
  guide          + inpainting's pull towards the biharmonic fill (``loss.inpaint_guide``; not
                 in the paper)
  knitwork       + the discriminator (``loss.gamma``, eq. 4): the preset itself

Each stage is the previous one with the fields of ``ABLATION_CHANGES`` set to the preset's.
``ablation_stages`` leaves out the stages that change nothing for a given preset.
"""

from __future__ import annotations

import dataclasses
import itertools

from knitwork.config import Config, as_baseline

ABLATION_STAGES: tuple[str, ...] = (
    "mlp", "patches", "consistency", "reconstructor", "guide", "knitwork"
)  # fmt: skip

# stage → the fields (dotted) it takes from the preset, on top of the previous stage
ABLATION_CHANGES: dict[str, tuple[str, ...]] = {
    "patches": ("model.method", "model.patches"),
    "consistency": ("loss.alpha", "loss.alpha_ramp"),
    "reconstructor": ("model.reconstructor", "loss.beta"),
    "guide": ("loss.inpaint_guide", "loss.inpaint_guide_fade"),
    "knitwork": ("loss.gamma",),
}


def ablation_stages(config: Config) -> tuple[str, ...]:
    """The stages that differ for the preset ``config``: ``mlp``, each later stage that
    changes the config (one that already equals the preset is left to ``knitwork``), and
    ``knitwork``. A preset without a guide has no ``guide`` stage; with γ 0, the last stage
    before ``knitwork`` is the one that made it."""
    configs = {stage: ablation_config(config, stage) for stage in ABLATION_STAGES}
    middle = [
        stage
        for before, stage in itertools.pairwise(ABLATION_STAGES[:-1])
        if configs[stage] not in (configs[before], config)
    ]
    return ("mlp", *middle, "knitwork")


def ablation_config(config: Config, stage: str) -> Config:
    """The config of ``stage`` derived from the preset ``config`` (a Knitwork config);
    ``knitwork`` is ``config`` itself, ``mlp`` its ``as_baseline``."""
    if stage not in ABLATION_STAGES:
        raise ValueError(
            f"unknown ablation stage {stage!r}; choose from {', '.join(ABLATION_STAGES)}"
        )
    if config.model.method != "knitwork":
        raise ValueError(
            "the ablation starts from a Knitwork preset (model.method: knitwork); got "
            f"model.method {config.model.method!r}: drop --baseline or choose another preset"
        )
    staged = as_baseline(config)
    for name in ABLATION_STAGES[1 : ABLATION_STAGES.index(stage) + 1]:
        staged = _take(staged, config, ABLATION_CHANGES[name])
    return staged


def _take(staged: Config, preset: Config, fields: tuple[str, ...]) -> Config:
    """``staged`` with each dotted section.field of ``fields`` set to ``preset``'s value."""
    sections: dict[str, dict] = {}
    for dotted in fields:
        section, name = dotted.split(".")
        sections.setdefault(section, {})[name] = getattr(getattr(preset, section), name)
    return staged.replace(
        **{
            section: dataclasses.replace(getattr(staged, section), **values)
            for section, values in sections.items()
        }
    )
