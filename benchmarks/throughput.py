"""Throughput: packed fits (images/hour for K = 1, 2, 4, 8, against one process per image) and
the training step's efficiency (GFLOP/s as a fraction of a plain matmul's, fp32 and bf16, and
what each part of the step costs). Writes sections of docs/benchmarks/performance.md.

    python benchmarks/throughput.py pack  [--images ../shared/datasets/tuning] [--count 8]
                                          [--side 64] [--steps 150] [--packs 1 2 4 8]
    python benchmarks/throughput.py steps [--side 128] [--repeats 5]
    python benchmarks/throughput.py ttq   [--count 3] [--side 48]
    python benchmarks/throughput.py compile [--side 128] [--repeats 10]
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import statistics
import time
from pathlib import Path

import torch
from core import load_reduced, matmul_gflops, step_cost
from performance import header, section

from knitwork.config import Config
from knitwork.degradation import Degradation
from knitwork.metrics import psnr
from knitwork.packs import fit_packed
from knitwork.presets import get_preset
from knitwork.trainer import Trainer

TASKS = ("denoise", "inpaint")


def cases(images: str, count: int, side: int, task: str = "denoise"):
    """``count`` tuning images (cycled if fewer) at ``side`` px, degraded with seeds 0, 1, ..."""
    paths = sorted(Path(images).glob("*.jpg"))
    return [
        Degradation(task=task).apply(load_reduced(paths[i % len(paths)], side), i)
        for i in range(count)
    ]


def fast_config(task: str, steps: int, device: str = "cpu", **optim) -> Config:
    config = get_preset(f"fast-{task}").with_steps(steps).with_device(device)
    return config.replace(optim=dataclasses.replace(config.optim, **optim))


def timed_pack(pairs, config: Config, pack: int) -> tuple[float, list[float]]:
    """Wall seconds to fit every image ``pack`` at a time, and each image's PSNR."""
    start = time.perf_counter()
    results = fit_packed(
        [obs for obs, _ in pairs], config, seeds=list(range(len(pairs))), pack=pack
    )
    wall = time.perf_counter() - start
    return wall, [psnr(r.image, truth) for r, (_, truth) in zip(results, pairs, strict=True)]


def _solo_in_process(job) -> list[float]:
    pairs, config, seeds = job
    torch.set_num_threads(1)
    results = fit_packed([o for o, _ in pairs], config, seeds=seeds, pack=1)
    return [psnr(r.image, t) for r, (_, t) in zip(results, pairs, strict=True)]


def timed_processes(pairs, config: Config, processes: int) -> tuple[float, list[float]]:
    """Wall seconds with one single-threaded process per CPU, each fitting its share."""
    shares = [
        (pairs[i::processes], config, list(range(len(pairs)))[i::processes])
        for i in range(processes)
    ]
    start = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        parts = pool.map(_solo_in_process, shares)
    wall = time.perf_counter() - start
    scores = [0.0] * len(pairs)
    for i, part in enumerate(parts):
        scores[i::processes] = part
    return wall, scores


def paired(a: list[float], b: list[float]) -> str:
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
    return f"{statistics.fmean(diffs):+.3f} ± {se:.3f}"


def pack(args: argparse.Namespace) -> None:
    """Images/hour for K packed fits against K = 1 (and one process per CPU), same PSNR."""
    torch.set_num_threads(2)
    pairs = cases(args.images, args.count, args.side)
    config = fast_config("denoise", args.steps, precision="fp32")
    rows = [
        "| layout | wall s | images/hour | speed-up | mean PSNR | PSNR − K=1 (paired SE) |",
        "|" + "---|" * 6,
    ]
    timed_pack(pairs[:1], fast_config("denoise", 2), 1)  # warm-up: imports, allocator
    base = None
    runs = [(f"packed K={k}", lambda k=k: timed_pack(pairs, config, k)) for k in args.packs]
    runs.append(("2 processes × 1 thread, K=1", lambda: timed_processes(pairs, config, 2)))
    for name, run in runs:
        wall, scores = run()
        base = base or (wall, scores)
        rows.append(
            f"| {name} | {wall:.1f} | {len(pairs) / wall * 3600:.0f} | ×{base[0] / wall:.2f} "
            f"| {statistics.fmean(scores):.2f} | {paired(scores, base[1])} |"
        )
        print(rows[-1], flush=True)
    command = (
        f"python benchmarks/throughput.py pack --images {args.images} --count {args.count} "
        f"--side {args.side} --steps {args.steps} --packs {' '.join(map(str, args.packs))}"
    )
    note = (
        f"{args.count} tuning images at {args.side}×{args.side} px (cycled when fewer), denoising "
        f"σ 25, `fast-denoise` in fp32 with {args.steps} full-grid steps and no early stop, on "
        "the CPU with 2 torch threads. Packed K: `knitwork.packs.fit_packed(..., pack=K)` in one "
        "process (wall time includes building, fitting and drawing every image). The last row "
        "fits the same images solo in 2 single-threaded processes (their start-up included)."
    )
    section("pack", ["## Packed fits", "", *header(command), note, "", *rows, ""])


ABLATIONS = {
    "whole step": {},
    "without the discriminator (γ = 0)": {"loss": {"gamma": 0.0}},
    "without consistency (α = 0)": {"loss": {"alpha": 0.0}},
    "without the reconstructor and its pixel loss": {
        "model": {"reconstructor": "none"},
        "loss": {"beta": 0.0},
    },
}


def ablated(config: Config, changes: dict) -> Config:
    sections = {
        name: dataclasses.replace(getattr(config, name), **fields)
        for name, fields in changes.items()
    }
    return config.replace(**sections)


def steps(args: argparse.Namespace) -> None:
    """Step GFLOP/s as a fraction of matmul's (fp32, bf16) and each part's cost by ablation."""
    torch.set_num_threads(2)
    peaks = {"fp32": matmul_gflops(), "bf16": matmul_gflops(dtype=torch.bfloat16)}
    print(f"matmul GFLOP/s: {peaks}", flush=True)
    rows = [
        "| task | precision | step | GFLOP / step | s / step | GFLOP/s | fraction of matmul |",
        "|" + "---|" * 7,
    ]
    for task in TASKS:
        ((obs, _),) = cases(args.images, 1, args.side, task)
        for precision, peak in peaks.items():
            base = fast_config(task, 100, precision=precision)
            for name, changes in ABLATIONS.items():
                gflop, seconds = step_cost(obs, ablated(base, changes), args.repeats)
                rows.append(
                    f"| {task} | {precision} | {name} | {gflop:.2f} | {seconds:.3f} "
                    f"| {gflop / seconds:.0f} | {gflop / seconds / peak:.2f} |"
                )
                print(rows[-1], flush=True)
    command = f"python benchmarks/throughput.py steps --side {args.side} --repeats {args.repeats}"
    note = (
        f"One tuning image at {args.side}×{args.side} px, `fast-*` presets, full-grid steps, "
        "2 torch threads. FLOPs counted by `torch.utils.flop_counter` on one step; seconds the "
        f"mean of {args.repeats} steps after a warm-up. The matmul reference, measured in the "
        f"same run: (16384×512)·(512×256), **{peaks['fp32']:.0f} GFLOP/s fp32, "
        f"{peaks['bf16']:.0f} GFLOP/s bf16**. Rows without a part show what that part costs."
    )
    section("steps", ["## Step efficiency", "", *header(command), note, "", *rows, ""])


def compiled_step(obs, what: str, repeats: int) -> tuple[float, float]:
    """(seconds to compile, i.e. the first two steps, seconds per step after) for a Trainer
    whose ``what`` ("none", "patch MLP", "every network and the consistency loss") is compiled."""
    import knitwork.losses as losses

    original = losses.consistency_loss
    trainer = Trainer(obs, fast_config("denoise", repeats + 10, precision="fp32"), seed=0)
    model = trainer.model
    try:
        if what != "none":
            model.patch_mlp = torch.compile(model.patch_mlp)
        if what.startswith("every"):
            model.reconstructor = torch.compile(model.reconstructor)
            model.discriminator = torch.compile(model.discriminator)
            losses.consistency_loss = torch.compile(original)
        start = time.perf_counter()
        trainer.step()
        trainer.step()
        warm = time.perf_counter() - start
        trainer.step()
        start = time.perf_counter()
        for _ in range(repeats):
            trainer.step()
        return warm, (time.perf_counter() - start) / repeats
    finally:
        losses.consistency_loss = original


def compile_part(args: argparse.Namespace) -> None:
    """torch.compile against eager for the fp32 step, compile time counted."""
    torch.set_num_threads(2)
    ((obs, _),) = cases(args.images, 1, args.side, "denoise")
    rows = ["| compiled | first two steps s | s / step after |", "|---|---|---|"]
    for what in ("none", "patch MLP", "every network and the consistency loss"):
        warm, per_step = compiled_step(obs, what, args.repeats)
        rows.append(f"| {what} | {warm:.1f} | {per_step:.3f} |")
        print(rows[-1], flush=True)
    command = f"python benchmarks/throughput.py compile --side {args.side} --repeats {args.repeats}"
    note = (
        f"`fast-denoise` in fp32 on one tuning image at {args.side}×{args.side} px, 2 torch "
        "threads; the first two steps include compiling; seconds per step are the mean of "
        f"{args.repeats} steps after one more warm-up step."
    )
    section("compile", ["## torch.compile", "", *header(command), note, "", *rows, ""])


TTQ_MARGIN = 0.2  # dB: "reaches the paper preset's final PSNR" means within this of it
TTQ_TIME = 1 / 3  # ... in at most this fraction of the paper preset's wall time


def final_fit(obs, truth, config: Config) -> tuple[float, float]:
    """(PSNR of the restored image, seconds of the fit's steps)."""
    result = fit_packed([obs], config, seeds=[0], pack=1)[0]
    return psnr(result.image, truth), result.seconds


def ttq(args: argparse.Namespace) -> None:
    """Each fast-* variant's final PSNR and time against its paper-* preset's."""
    torch.set_num_threads(2)
    variants = {"fast": {}, "fast + cosine lr": {"lr_decay": "cosine"}}
    rows = [
        "| task | image | paper PSNR | paper s | variant | PSNR | s | PSNR − paper "
        "| time / paper |",
        "|" + "---|" * 9,
    ]
    found: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for task in args.tasks:
        for i, (obs, truth) in enumerate(cases(args.images, args.count, args.side, task)):
            try:
                paper_config = get_preset(f"paper-{task}").with_device("cpu")
                paper, paper_s = final_fit(obs, truth, paper_config)
            except ValueError as err:  # e.g. too small for the paper's 5×5 patches at scale 8
                rows.append(f"| {task} | {i} | – | – | – | – | – | – | not run: {err} |")
                print(rows[-1], flush=True)
                continue
            for name, changes in variants.items():
                steps = get_preset(f"fast-{task}").optim.steps
                score, seconds = final_fit(obs, truth, fast_config(task, steps, **changes))
                found.setdefault((task, name), []).append((score - paper, seconds / paper_s))
                rows.append(
                    f"| {task} | {i} | {paper:.2f} | {paper_s:.0f} | {name} | {score:.2f} "
                    f"| {seconds:.0f} | {score - paper:+.2f} | {seconds / paper_s:.2f} |"
                )
                print(rows[-1], flush=True)
    summary = ["| task | variant | PSNR − paper (paired SE) | time / paper | aim met |"]
    summary.append("|---|---|---|---|---|")
    for (task, name), pairs in found.items():
        diffs, ratios = [d for d, _ in pairs], [r for _, r in pairs]
        se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
        mean, ratio = statistics.fmean(diffs), max(ratios)
        met = mean >= -TTQ_MARGIN and ratio <= TTQ_TIME
        summary.append(
            f"| {task} | {name} | {mean:+.2f} ± {se:.2f} dB | ≤ {ratio:.2f} | "
            f"{'yes' if met else 'no'} |"
        )
    command = f"python benchmarks/throughput.py ttq --count {args.count} --side {args.side}"
    partial = tuple(args.tasks) != TASKS
    if partial:
        command += f" --tasks {' '.join(args.tasks)}"
    note = (
        f"The first {args.count} tuning images at {args.side}×{args.side} px (a reduced "
        "protocol: the paper's images are larger), inpainting 2 % (a seeded square hole) and "
        "denoising σ 25, each fitted with its `paper-*` preset (4,000 full-grid steps, fp32) and "
        "with each `fast-*` variant (their own steps; `precision: auto`, bf16 on this CPU), "
        "seed 0, 2 torch threads. PSNR of the restored image (known pixels pasted back for "
        "inpainting), seconds of the fit's steps. The aim: within "
        f"{TTQ_MARGIN} dB of the paper preset's PSNR in at most a third of its time."
    )
    name = "ttq-" + "-".join(args.tasks) if partial else "ttq"
    title = f"## Time to quality ({', '.join(args.tasks)})" if partial else "## Time to quality"
    section(name, [title, "", *header(command), note, "", *rows, "", *summary, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="part", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--images", default="../shared/datasets/tuning")
    p.add_argument("--count", type=int, default=8)
    p.add_argument("--side", type=int, default=64)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--packs", type=int, nargs="+", default=[1, 2, 4, 8])
    p.set_defaults(go=pack)
    s = sub.add_parser("steps")
    s.add_argument("--images", default="../shared/datasets/tuning")
    s.add_argument("--side", type=int, default=128)
    s.add_argument("--repeats", type=int, default=5)
    s.set_defaults(go=steps)
    t = sub.add_parser("ttq")
    t.add_argument("--images", default="../shared/datasets/tuning")
    t.add_argument("--count", type=int, default=3)
    t.add_argument("--side", type=int, default=48)
    t.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    t.set_defaults(go=ttq)
    c = sub.add_parser("compile")
    c.add_argument("--images", default="../shared/datasets/tuning")
    c.add_argument("--side", type=int, default=128)
    c.add_argument("--repeats", type=int, default=10)
    c.set_defaults(go=compile_part)
    args = parser.parse_args()
    args.go(args)


if __name__ == "__main__":
    main()
