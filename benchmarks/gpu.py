"""GPU throughput: images/hour per GPU at 256² for K packed fits (K = 1, 4, 16, 64) against K
processes sharing the GPU through Ray (fractional GPUs), utilisation and memory per image, and
a 12-megapixel photo's fit. Writes the "gpu" section of docs/benchmarks/performance.md.

    python benchmarks/gpu.py [--side 256] [--steps 300] [--packs 1 4 16 64]
                             [--processes 1 4 16] [--photo-steps 100]
    python benchmarks/gpu.py full-size [--limit 270]

Without a GPU it runs the same code on the CPU at a toy size (to show that it works) and the
section says that the GPU table is pending.

``full-size`` runs the paper's protocol for docs/benchmarks/quality.md: the `paper-*` presets
(4,000 steps) on Set5 at full size through `knitwork bench quality`, inpainting at 2 % and
denoising at σ 20 (five 4,000-step fits each, packed on one GPU: sized to fit ten minutes of
one GPU by the 0.2 PFLOP per 1,000 steps at 256² estimate, not yet measured), each bench
stopped after --limit seconds (a rerun resumes; finished
rows are kept). The rows land in docs/benchmarks/quality/full-set5-SUITE.json. Without a GPU it
only says so.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
from performance import header, section
from PIL import Image
from throughput import cases, fast_config

from knitwork.degradation import Degradation
from knitwork.fit import fit
from knitwork.metrics import psnr
from knitwork.packs import fit_packed


class Utilisation:
    """Samples ``nvidia-smi`` GPU utilisation every half second while in a ``with`` block."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()

    def _sample(self) -> None:
        query = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
        while not self._stop.wait(0.5):
            try:
                out = subprocess.run(query, capture_output=True, text=True, timeout=5)
                self.samples.append(float(out.stdout.split()[0]))
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                return

    def __enter__(self) -> Utilisation:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mean(self) -> str:
        return f"{statistics.fmean(self.samples):.0f} %" if self.samples else "–"


def packed_row(args, device: str, k: int) -> str:
    pairs = cases(args.images, k, args.side)
    config = fast_config("denoise", args.steps, device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with Utilisation() as busy:
        start = time.perf_counter()
        results = fit_packed([o for o, _ in pairs], config, seeds=list(range(k)), pack=k)
        wall = time.perf_counter() - start
    memory = f"{torch.cuda.max_memory_allocated() / k / 2**20:.0f}" if device == "cuda" else "–"
    score = statistics.fmean(psnr(r.image, t) for r, (_, t) in zip(results, pairs, strict=True))
    return (
        f"| packed | {k} | {wall:.1f} | {k / wall * 3600:.0f} | {busy.mean} | {memory} "
        f"| {score:.2f} |"
    )


def _solo_task(obs, truth, config, seed):
    result = fit(obs, config, seed=seed)
    return psnr(result.image, truth)


def processes_row(args, device: str, k: int) -> str:
    import ray

    from pipeline.cluster import ClusterOptions, required_environment

    os.environ.update(required_environment(ClusterOptions()))  # a loopback-only local cluster
    gpus = 1 if device == "cuda" else 0
    ray.init(num_cpus=max(k, 1), num_gpus=gpus, include_dashboard=False, log_to_driver=False)
    try:
        pairs = cases(args.images, k, args.side)
        config = fast_config("denoise", args.steps, device)
        remote = ray.remote(_solo_task).options(num_gpus=gpus / k, num_cpus=1)
        with Utilisation() as busy:
            start = time.perf_counter()
            scores = ray.get([remote.remote(o, t, config, i) for i, (o, t) in enumerate(pairs)])
            wall = time.perf_counter() - start
    finally:
        ray.shutdown()
    share = f"{1 / k:.3g} GPU each" if gpus else "CPU"
    return (
        f"| {k} processes (Ray, {share}) | 1 | {wall:.1f} | {k / wall * 3600:.0f} "
        f"| {busy.mean} | – | {statistics.fmean(scores):.2f} |"
    )


def photo_row(args, device: str) -> str:
    """A 12-MP photo made from a tuning image (a toy size on the CPU), denoised."""
    width, height = (4000, 3000) if device == "cuda" else (128, 96)
    source = sorted(Path(args.images).glob("*.jpg"))[0]
    with Image.open(source) as img:
        big = img.convert("RGB").resize((width, height), Image.LANCZOS)
    obs, truth = Degradation(task="denoise").apply(np.asarray(big, np.float32) / 255, 0)
    config = fast_config("denoise", args.photo_steps, device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = fit(obs, config, seed=0)
    wall = time.perf_counter() - start
    memory = f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if device == "cuda" else "–"
    mode = "full grid" if result.crop is None else f"{result.crop[1]}×{result.crop[0]} crops"
    return (
        f"| {width}×{height} from {source.name}, {args.photo_steps} steps ({mode}) "
        f"| {wall:.0f} s | {memory} | {psnr(result.image, truth):.2f} |"
    )


FULL_SIZE = (("inpaint", "fill=0.02"), ("denoise", "sigma=20"))  # estimated to fit 10 GPU min


def full_size_command(suite: str, settings: str) -> list[str]:
    """The bench line of one full-size suite: `paper-SUITE`, Set5 as it is, on the GPU."""
    return [
        "knitwork", "bench", "quality", "--suite", suite, "--images", "../shared/datasets/Set5",
        "--preset", f"paper-{suite}", "--settings", settings, "--device", "cuda",
        "--gpus-per-task", "0.2", "--pack", "5", "--experiment", "quality-full-Set5",
        "--output", f"out/bench/full-Set5-{suite}",
        "--json", f"docs/benchmarks/quality/full-set5-{suite}.json", "--quiet",
    ]  # fmt: skip


def full_size(limit: int) -> int:
    """The paper's presets at full size on Set5 (``FULL_SIZE``), or a message without a GPU."""
    if not torch.cuda.is_available():
        print("full-size: no GPU here; the full-size rows of docs/benchmarks/quality.md wait "
              "for one (nothing was run)")  # fmt: skip
        return 0
    bin_dir = Path(sys.executable).parent
    for suite, settings in FULL_SIZE:
        cmd = full_size_command(suite, settings)
        print("$", shlex.join(cmd), flush=True)
        try:
            subprocess.run([str(bin_dir / cmd[0]), *cmd[1:]], timeout=limit, check=False)
        except subprocess.TimeoutExpired:
            print(f"stopped after {limit} s; a rerun resumes", flush=True)
    return 0


def main() -> None:
    if sys.argv[1:2] == ["full-size"]:
        full = argparse.ArgumentParser(description="the paper's presets at full size on Set5")
        full.add_argument("--limit", type=int, default=270, help="seconds per suite [270]")
        sys.exit(full_size(full.parse_args(sys.argv[2:]).limit))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", default="../shared/datasets/tuning")
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--packs", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--photo-steps", type=int, default=100)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":  # a toy run of the same code: the table is the GPU's to fill
        args.side, args.steps, args.packs, args.processes = 32, 5, [1, 2], [1, 2]
        args.photo_steps = 5
    rows = [
        "| layout | K | wall s | images/hour | GPU busy | MiB / image | mean PSNR |",
        "|" + "---|" * 7,
    ]
    for k in args.packs:
        rows.append(packed_row(args, device, k))
        print(rows[-1], flush=True)
    for k in args.processes:
        rows.append(processes_row(args, device, k))
        print(rows[-1], flush=True)
    photo = [
        "| photo | wall | peak GPU memory | PSNR |",
        "|---|---|---|---|",
        photo_row(args, device),
    ]
    print(photo[-1], flush=True)
    command = "python benchmarks/gpu.py " + " ".join(
        [f"--side {args.side} --steps {args.steps}", "--packs " + " ".join(map(str, args.packs))]
    )
    if device == "cpu":
        lines = [
            "## GPU throughput",
            "",
            "**Pending: no GPU has run this yet.** `benchmarks/gpu.py` is ready: with a GPU it "
            "measures images/hour per GPU at 256² for K = 1, 4, 16, 64 packed fits against K "
            "processes with fractional GPUs through Ray, the GPU's utilisation and memory per "
            "image, and a 12-megapixel photo. The estimate to beat: about 0.2 PFLOP per 1,000 "
            "paper steps at 256², so an H100 at half its TF32 peak fits on the order of 1,000 "
            "paper-recipe images an hour.",
            "",
            "Without a GPU the script runs its CPU toy path (32 px, 5 steps), which only shows "
            "that the code runs; its last output, for the record:",
            "",
            *header("python benchmarks/gpu.py  # on a machine without a GPU"),
            *rows,
            "",
            *photo,
            "",
        ]
    else:
        note = (
            f"Denoising σ 25 with `fast-denoise`, {args.steps} full-grid steps at "
            f"{args.side}×{args.side} (tuning images, cycled); wall time includes building, "
            "fitting and drawing; processes include their start-up. GPU busy: mean of "
            "`nvidia-smi` utilisation samples every 0.5 s."
        )
        lines = ["## GPU throughput", "", *header(command), note, "", *rows, "", *photo, ""]
    section("gpu", lines)


if __name__ == "__main__":
    main()
