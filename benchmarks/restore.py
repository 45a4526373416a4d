"""Pipeline benchmark: throughput of `knitwork restore` with 1 and 2 Ray workers, the cost of
Ray + MLflow over calling the core in a plain loop, and peak memory of workers and driver.

    python benchmarks/restore.py [--images 8] [--size 64] [--steps 100] [--pack 4]
                                  [--out docs/benchmarks/pipeline.md]

Each mode runs in its own process (so its peak memory is its own) on the same N images:
``loop`` calls ``pipeline.worker.process_pack`` image after image with 2 torch threads (no Ray, no
MLflow); ``ray-1`` runs `restore` with one task at a time of 2 CPUs; ``ray-2`` with two tasks
of 1 CPU each; ``loop-pack`` and ``ray-pack`` do the same as ``loop`` and ``ray-1`` with
``--pack`` images fitted together per task (``process_pack``). Ray starts a local cluster
inside the timed region, MLflow writes to a sqlite file, storage is a local folder.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
from machine import describe, publish
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
MODES = ("loop", "ray-1", "ray-2", "loop-pack", "ray-pack")


def make_images(folder: Path, count: int, size: int) -> None:
    sources = sorted((ROOT / "examples" / "images").glob("*.png"))
    for i in range(count):
        with Image.open(sources[i % len(sources)]) as img:
            img = img.convert("RGB").resize((size, size), Image.LANCZOS)
        if i >= len(sources):
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        img.save(folder / f"img{i:03d}.png")


def run_mode(mode: str, folder: Path, steps: int, pack: int = 1) -> dict:
    from knitwork.degradation import Degradation
    from knitwork.presets import get_preset
    from pipeline.cluster import ClusterOptions
    from pipeline.driver import RestoreOptions, image_seed, restore
    from pipeline.manifest import config_hash
    from pipeline.storage import open_storage
    from pipeline.worker import Job, process_pack

    config = get_preset("fast-inpaint").with_steps(steps)
    source, target = folder / "in", folder / f"out-{mode}"
    start = time.perf_counter()
    per_task = pack if mode.endswith("pack") else 1
    if mode.startswith("loop"):
        torch.set_num_threads(2)
        src, dst = open_storage(str(source)), open_storage(str(target))
        jobs = [
            Job(
                name=name,
                input=src,
                output=dst,
                config=config,
                degradation=Degradation(task="inpaint"),
                seed=image_seed(0, name),
                config_hash=config_hash({}),
                synthetic=True,
                pack=per_task,
            )
            for name in src.list_images()
        ]
        for i in range(0, len(jobs), per_task):
            outcomes = process_pack(jobs[i : i + per_task])
            assert all(o.record.status == "ok" for o in outcomes)
        workers = {}
    else:
        from pipeline.cluster import required_environment

        os.environ.update(required_environment(ClusterOptions()))  # a loopback-only cluster
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / f'mlflow-{mode}.db'}"
        cpus = 1.0 if mode == "ray-2" else 2.0
        options = RestoreOptions(
            input=str(source),
            output=str(target),
            config=config,
            degradation=Degradation(task="inpaint"),
            synthetic=True,
            cluster=ClusterOptions(cpus_per_task=cpus, pack=per_task),
            progress=False,
        )
        summary = restore(options)
        assert summary.count("ok") == len(summary.records)
        workers = {}
        for r in summary.records:
            workers[r.worker] = max(workers.get(r.worker, 0.0), r.worker_peak_rss_mb or 0.0)
    seconds = time.perf_counter() - start
    driver = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"mode": mode, "seconds": seconds, "driver_peak_mb": driver, "workers": workers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--pack", type=int, default=4)
    parser.add_argument("--out", default="docs/benchmarks/pipeline.md")
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args.mode, Path(args.folder), args.steps, args.pack)))
        return
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "in").mkdir()
        make_images(folder / "in", args.images, args.size)
        for mode in MODES:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--mode",
                    mode,
                    "--folder",
                    tmp,
                    "--steps",
                    str(args.steps),
                    "--pack",
                    str(args.pack),
                ],
                capture_output=True,
                text=True,
                cwd=ROOT,
                check=True,
            )
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(results[-1], flush=True)
    write_report(args, results)


def write_report(args, results) -> None:
    loop = next(r for r in results if r["mode"] == "loop")["seconds"]
    lines = [
        "# Pipeline benchmark: Ray + MLflow over a plain loop",
        "",
        f"Command: `python benchmarks/restore.py --images {args.images} --size {args.size} "
        f"--steps {args.steps} --pack {args.pack}`  ",
        f"Machine: {describe()}; run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.  ",
        f"Work: {args.images} images of {args.size}×{args.size} px (examples/images, resized), "
        f"`fast-inpaint` with {args.steps} steps, synthetic 2% holes, local folders, MLflow on "
        "sqlite. Times include starting the local Ray cluster (a few seconds), so the overhead "
        "shrinks as batches grow.",
        "",
        "Packed rows compare with their unpacked twins: `ray-pack` over `loop-pack` is the "
        "pipeline's overhead with packing.",
        "",
        "| mode | what runs | wall s | images / hour | time vs plain loop | driver peak MB |"
        " worker peak MB |",
        "|---|---|---|---|---|---|---|",
    ]
    what = {
        "loop": "`process()` in a loop, 2 torch threads, no Ray, no MLflow",
        "ray-1": "`restore`, 1 task at a time × 2 CPUs",
        "ray-2": "`restore`, 2 tasks at a time × 1 CPU",
        "loop-pack": f"`process_pack()` on {args.pack} images at a time, 2 torch threads",
        "ray-pack": f"`restore --pack {args.pack}`, 1 task at a time × 2 CPUs",
    }
    for r in results:
        peaks = list(r["workers"].values())
        worker = f"{max(peaks):.0f} (max of {len(peaks)})" if peaks else "– (in the driver)"
        lines.append(
            f"| {r['mode']} | {what[r['mode']]} | {r['seconds']:.1f} | "
            f"{args.images / r['seconds'] * 3600:.0f} | {r['seconds'] / loop:.2f} | "
            f"{r['driver_peak_mb']:.0f} | {worker} |"
        )
    publish(ROOT / args.out, lines)


if __name__ == "__main__":
    main()
