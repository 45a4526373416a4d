"""The quality benchmark: every image of a folder degraded with a fixed, seeded protocol and
restored by the Knitwork, the MLP baseline and classical tools (or, in the ablation suites, by
the paper's ablation stages, ``knitwork.ablation``), as Ray tasks; one row per (method,
setting, image, repeat), recorded in MLflow and in ``OUTPUT/rows.jsonl``.

Protocol (docs/benchmarks/quality.md; the suites, settings and methods in
``pipeline.bench_suites``): inpainting one square hole of 1, 2, 4, 8, 16 % of the
pixels at a seeded position fully inside the image, or a seeded free-form hole (scratches, a
text overlay: ``knitwork.masks``); denoising σ 10, 20, 40 (0–255) unless other levels
are asked for (``denoise_settings``); blind SR ×2 and ×4 with delta, round and diagonal
Gaussian kernels and a random anisotropic Gaussian drawn per image from its seed (DIV2KRK's
generator, ``kernels.random_kernel``). A reduced protocol may downscale each clean image
(``max_side``) and then keep its centre (``centre_crop``) before degrading it. The seed of an
image is the base seed plus a hash of its name (``image_seed``), the same for every method and
setting; repeat r (``--seeds N``: r = 0 … N − 1) uses that seed + r for the degradation and
the fit alike, so every method of a repeat sees the same degraded image. RGB PSNR/SSIM with
data range 1, no border crop, on the whole image and on the hole; ``psnr_raw``/``ssim_raw``
score the whole image as the paper does, on the networks' raw output (``FitResult.raw``: no
known pixel pasted back; a classical tool's output as it is); the networks' SR rows also
score their learned kernel against the true one (``kernel_error``, ``kernel_error_start``:
``report.kernel_scores``).

Restored images land in ``OUTPUT/SETTING/METHOD/IMAGE.png`` (inputs in ``.../input/``, ground
truths in ``.../truth/``, SR's true kernels there as ``IMAGE.npy``), repeats r > 0 in
``OUTPUT/SETTING/repeatR/...``; a rerun skips the rows already done with the same settings.
"""

from __future__ import annotations

import io
import os
import socket
import time
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath

import numpy as np

from knitwork.classical import classical
from knitwork.config import Config
from knitwork.dip import dip_config, fit_dip
from knitwork.fit import fit
from knitwork.io import DEFAULT_MAX_PIXELS, decode_image, encode_image, reduce_to
from knitwork.metrics import evaluate
from knitwork.packs import fit_packed
from knitwork.report import kernel_scores, learned_kernel
from knitwork.result import FitResult
from pipeline.bench_rows import digest
from pipeline.bench_suites import (
    DIP,
    KERNEL_SCORES,
    NEURAL,
    Setting,
    alone,
    is_neural,
    neural_config,
)
from pipeline.storage import NotFound, Storage, StorageError

PNG = ".png"  # restored images, inputs and truths are written as PNG


@dataclass(frozen=True, kw_only=True)
class BenchItem:
    """One Ray task: the methods to run on one image under one setting, in one repeat."""

    suite: str
    source: Storage
    output: Storage
    max_side: int | None  # images downscaled to this longest side first
    config: Config  # the Knitwork's config (the MLP's is derived from it)
    setting: Setting | None = None
    image: str = ""  # relative name in ``source``
    methods: tuple[str, ...] = ()  # one neural method, or classical ones
    digests: dict[str, str] = field(default_factory=dict)  # method → hash of its row's inputs
    seed: int = 0
    max_pixels: int = DEFAULT_MAX_PIXELS
    threads: int | None = None
    write_inputs: bool = False  # also write the degraded input and the ground truth
    pack: int | None = 1  # fits packed per task (knitwork.packed); None: automatic
    centre_crop: int | None = None  # then their central N×N (less where a side is shorter)
    dip_steps: int | None = None  # DIP's steps; None: its published schedule's (knitwork.dip)
    repeat: int = 0  # r of --seeds: the seed is the image's + r


@dataclass(kw_only=True)
class RowOutcome:
    row: dict
    history: list[dict[str, float]] = field(default_factory=list)
    artifacts: dict[str, bytes] = field(default_factory=dict)


def _folder(setting: Setting, repeat: int) -> str:
    """A setting's folder: SETTING, and SETTING/repeatR for repeats r > 0 (no method, input or
    truth folder is named so, so repeats never collide)."""
    return setting.name if repeat == 0 else f"{setting.name}/repeat{repeat}"


def output_name(setting: Setting, method: str, image: str, repeat: int = 0) -> str:
    stem = PurePosixPath(image).with_suffix(".png")
    return f"{_folder(setting, repeat)}/{method}/{stem}"


def base_row(item: BenchItem, method: str) -> dict:
    kernel = dict.fromkeys(KERNEL_SCORES) if item.suite == "sr" else {}
    return {
        "suite": item.suite,
        "method": method,
        "setting": item.setting.name,
        "image": item.image,
        "repeat": item.repeat,
        "status": "failed",
        "error": None,
        "psnr": None,
        "ssim": None,
        "psnr_hole": None,
        "ssim_hole": None,
        "psnr_raw": None,
        "ssim_raw": None,
        "seconds": None,
        "params": "",
        "seed": item.seed,
        "max_side": item.max_side,
        "centre_crop": item.centre_crop,
        "config_hash": item.digests[method],
        "output": output_name(item.setting, method, item.image, item.repeat),
        "worker": f"{socket.gethostname()}:{os.getpid()}",
    } | kernel


def _scores(restored: np.ndarray, raw: np.ndarray, truth: np.ndarray, obs) -> dict:
    """Our protocol's scores of ``restored`` (whole image, hole) and the paper's of ``raw``
    (the whole raw output: ``psnr_raw``, ``ssim_raw``)."""
    hole = obs.hole if obs.task == "inpaint" else None
    scores = evaluate(restored, truth, hole)
    whole = scores if raw is restored else evaluate(raw, truth)
    scores |= {"psnr_raw": whole["psnr"], "ssim_raw": whole["ssim"]}
    return {
        k: (None if v is None or not np.isfinite(v) else round(float(v), 4))
        for k, v in scores.items()
    }


def _neural(
    item: BenchItem, method: str, obs, truth, result: FitResult | None = None
) -> tuple[np.ndarray, np.ndarray, dict, list]:
    """A neural method's restoration and raw output: ``result`` when it was fitted in a pack,
    else a fit."""
    config = neural_config(item.config, method)
    if result is None:
        result = fit(obs, config, seed=item.seed, ground_truth=truth)
    what = config.model.method if method in NEURAL else f"{method} stage"
    params = f"{what}, {config.optim.steps} steps, config {item.digests[method]}"
    extra = {"params": params, "parameters": result.parameters, "packed": result.packed}
    if item.suite == "sr":
        true_kernel = item.setting.degradation.true_kernel(item.seed)
        scores = kernel_scores(learned_kernel(result), true_kernel)
        extra |= {k: None if v is None else round(v, 6) for k, v in scores.items()}
    return result.image, result.raw, extra, result.history


def _dip(item: BenchItem, obs, truth) -> tuple[np.ndarray, np.ndarray, dict, list]:
    """Deep Image Prior's restoration and raw output, with the history of its fit."""
    history: list[dict[str, float]] = []
    config = dip_config(item.suite, item.dip_steps)

    def record(step: int, metrics: dict[str, float]) -> None:
        history.append({"step": step, **metrics})

    result = fit_dip(obs, config, seed=item.seed, progress=record, ground_truth=truth)
    extra = {"params": result.params, "parameters": result.parameters, "packed": 1}
    return result.image, result.raw, extra, history


def _degrade(item: BenchItem):
    """The item's observation and ground truth, or its failed rows (a bad image)."""
    try:
        data = item.source.read(item.image)
        loaded = decode_image(data, item.source.join(item.image), item.max_pixels)
        clean = centre_crop(reduce_to(loaded.pixels, item.max_side), item.centre_crop)
        return item.setting.degradation.apply(clean, item.seed)
    except StorageError as err:
        if not isinstance(err, NotFound):
            raise  # transient: Ray retries the task
        return [failed_row(item, m, err) for m in item.methods]
    except Exception as err:  # a bad image fails its rows, never the bench
        return [failed_row(item, m, err) for m in item.methods]


def centre_crop(pixels: np.ndarray, side: int | None) -> np.ndarray:
    """The central side×side window (a shorter side kept whole); None: the whole image."""
    if side is None:
        return pixels
    height, width = pixels.shape[:2]
    top, left = max(0, (height - side) // 2), max(0, (width - side) // 2)
    return np.ascontiguousarray(pixels[top : top + side, left : left + side])


def _set_threads(item: BenchItem) -> None:
    if item.threads:
        import torch

        torch.set_num_threads(item.threads)


def kernel_name(setting: Setting, image: str, repeat: int = 0) -> str:
    """Where an SR setting's true kernel of ``image`` is written (beside its truth image)."""
    return f"{_folder(setting, repeat)}/truth/{PurePosixPath(image).with_suffix('.npy')}"


def _write_inputs(item: BenchItem, obs, truth) -> None:
    if item.write_inputs:
        setting, image, repeat = item.setting, item.image, item.repeat
        item.output.write(
            output_name(setting, "input", image, repeat), encode_image(obs.image, PNG)
        )
        item.output.write(output_name(setting, "truth", image, repeat), encode_image(truth, PNG))
        if item.suite == "sr":
            buffer = io.BytesIO()
            np.save(buffer, setting.degradation.true_kernel(item.seed))
            item.output.write(kernel_name(setting, image, repeat), buffer.getvalue())


def run_item(item: BenchItem) -> list[RowOutcome]:
    """Degrade one image, restore it with each of the item's methods, write and score."""
    _set_threads(item)
    degraded = _degrade(item)
    if isinstance(degraded, list):
        return degraded
    obs, truth = degraded
    _write_inputs(item, obs, truth)
    return [_run_method(item, method, obs, truth) for method in item.methods]


def run_pack(items: list[BenchItem]) -> list[list[RowOutcome]]:
    """Items of one neural method and setting on several images, their fits packed as one
    batched model (``knitwork.packed``); should the packed fit fail, each item runs alone.
    The outcomes of each item, in order."""
    _set_threads(items[0])
    degraded = [_degrade(item) for item in items]
    ready = [i for i, d in enumerate(degraded) if not isinstance(d, list)]
    method = items[0].methods[0]
    results: dict[int, FitResult] = {}
    if len(ready) > 1:
        try:
            fitted = fit_packed(
                [degraded[i][0] for i in ready],
                neural_config(items[0].config, method),
                seeds=[items[i].seed for i in ready],
                ground_truths=[degraded[i][1] for i in ready],
                pack=items[0].pack,
            )
            results = dict(zip(ready, fitted, strict=True))
        except Exception:
            results = {}  # fitted one by one below
    outcomes = []
    for i, item in enumerate(items):
        if i not in ready:
            outcomes.append(degraded[i])
            continue
        obs, truth = degraded[i]
        _write_inputs(item, obs, truth)
        outcomes.append([_run_method(item, method, obs, truth, results.get(i))])
    return outcomes


def _run_method(item: BenchItem, method: str, obs, truth, result=None) -> RowOutcome:
    row, start = base_row(item, method), time.perf_counter()
    try:
        if is_neural(method):
            restored, raw, extra, history = _neural(item, method, obs, truth, result)
        elif method == DIP:
            restored, raw, extra, history = _dip(item, obs, truth)
        else:
            tool = classical(item.suite, method)
            sigma = item.setting.degradation.sigma / 255 if item.suite == "denoise" else None
            restored, extra, history = tool.run(obs, sigma), {"params": tool.params}, []
            raw = restored  # its output as it is: the paper's protocol scores the same
        row |= extra | _scores(restored, raw, truth, obs)
        row["seconds"] = round(time.perf_counter() - start, 3)
        if result is not None:  # its share of the packed fit
            row["seconds"] = round(row["seconds"] + result.seconds, 3)
        png = encode_image(restored, PNG)
        item.output.write(row["output"], png)
    except StorageError:
        raise
    except Exception as err:
        return failed_row(item, method, err, row)
    row["status"] = "ok"
    row["height"], row["width"] = restored.shape[:2]
    return RowOutcome(row=row, history=history, artifacts={"restored.png": png})


def failed_row(item: BenchItem, method: str, err: Exception, row: dict | None = None) -> RowOutcome:
    row = row or base_row(item, method)
    row["error"] = f"{type(err).__name__}: {err}".splitlines()[0]
    return RowOutcome(row=row)


def plan_items(
    base: BenchItem,
    names: list[str],
    methods: tuple[str, ...],
    settings: tuple[Setting, ...],
    seeds: dict[str, int],
    done: dict,
    repeats: int = 1,
) -> list[BenchItem]:
    """One item per (image, setting, repeat, neural method) and one per (image, setting,
    repeat) for the classical methods; repeat r seeds with the image's seed + r. Rows done
    with the same hash (and their image present) are skipped."""
    items = []
    for setting in settings:
        for name in names:
            for repeat in range(repeats):
                seed = seeds[name] + repeat
                here = replace(base, image=name, setting=setting, seed=seed, repeat=repeat)
                items += _image_items(here, methods, done)
    return items


def _image_items(item: BenchItem, methods: tuple[str, ...], done: dict) -> list[BenchItem]:
    """The items of one (image, setting, repeat): each network alone, the classical tools
    together; the last one also writes the input and the truth."""
    todo = []
    for method in methods:
        h = digest(
            method, item.config, item.suite, item.setting, item.seed, item.max_side,
            item.centre_crop, item.repeat, item.dip_steps,
        )  # fmt: skip
        row = done.get((method, item.setting.name, item.image, item.repeat))
        finished = row is not None and row["status"] == "ok" and row["config_hash"] == h
        if not (finished and item.output.exists(row["output"])):
            todo.append((method, h))
    neural = [(m, h) for m, h in todo if alone(m)]
    rest = [(m, h) for m, h in todo if not alone(m)]
    groups = [[pair] for pair in neural] + ([rest] if rest else [])
    return [
        replace(
            item,
            methods=tuple(m for m, _ in group),
            digests=dict(group),
            write_inputs=group is groups[-1],
        )
        for group in groups
    ]


def run_task(items: list[BenchItem]) -> list[list[RowOutcome]]:
    """A Ray task: one item alone, or neural items packed (``run_pack``)."""
    return [run_item(items[0])] if len(items) == 1 else run_pack(items)


def pack_items(items: list[BenchItem], per_task: int) -> list[list[BenchItem]]:
    """Tasks: neural items of one method and setting ``per_task`` at a time (their fits
    packed), every other item alone."""
    tasks, groups = [], {}
    for item in items:
        if per_task > 1 and len(item.methods) == 1 and is_neural(item.methods[0]):
            groups.setdefault((item.setting.name, item.methods[0]), []).append(item)
        else:
            tasks.append([item])
    for group in groups.values():
        tasks += [group[i : i + per_task] for i in range(0, len(group), per_task)]
    return tasks
