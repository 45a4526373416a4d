"""Load run: `knitwork restore` on N tiny images with a 1-step fit, to see whether the cost of
an image stays flat along a large batch and whether the driver's memory stays bounded.

    python benchmarks/load.py [--images 5000] [--size 16] [--steps 1] [--block 500]
                              [--out docs/benchmarks/load.md]

N seeded-noise PNGs are written to a temporary folder, then `knitwork restore IN OUT --task
inpaint --synthetic --steps 1 --quiet` runs in a subprocess there: a local loopback Ray
cluster, MLflow on a sqlite file (artifacts in the folder's mlruns/), local folders. While it
runs, this script follows OUTPUT/_manifest.journal (one line per finished image, in the order
they finish) and samples from /proc the memory of the driver (the `knitwork` process) and of
the processes under it (Ray's raylet and GCS, the workers). The table gives, for each block of
images, its seconds per image and the memory at its end. A plain loop of the same 1-step fits
(``pipeline.worker.process``, no Ray, no MLflow) gives the core's share of each image.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from machine import describe, publish
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
JOURNAL = "_manifest.journal"
POLL_SECONDS = 0.2  # how often the journal is read
MEMORY_SECONDS = 1.0  # how often /proc is sampled
CORE_IMAGES = 50  # images fitted in the plain loop (the core's share)


def make_images(folder: Path, count: int, size: int) -> None:
    """``count`` size×size RGB PNGs of seeded noise, ``img00000.png`` …"""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:05d}.png")


def restore_command(folder: Path, steps: int) -> list[str]:
    out = folder / "out"
    return [sys.executable, "-m", "knitwork_cli", "restore", str(folder / "in"), str(out),
            "--task", "inpaint", "--synthetic", "--steps", str(steps), "--quiet"]  # fmt: skip


def environment(folder: Path, ray_dir: Path) -> dict[str, str]:
    from pipeline.cluster import ClusterOptions, required_environment

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env |= required_environment(ClusterOptions())  # a loopback-only local cluster
    env |= {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env |= {"RAY_TMPDIR": str(ray_dir), "PYTHONPATH": str(ROOT)}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
    return env


def _status_mb(pid: int, field_name: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def descendants(root: int) -> dict[int, str]:
    """pid → command name of every process under ``root`` (not ``root`` itself)."""
    parents: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            name = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents[int(entry.name)] = (ppid, Path(name).name if "/" in name else name)
    found, frontier = {}, [root]
    while frontier:
        pid = frontier.pop()
        for child, (ppid, name) in parents.items():
            if ppid == pid and child not in found:
                found[child] = name
                frontier.append(child)
    return found


@dataclass
class Memory:
    """One sample: the driver's RSS and peak, Ray's own services, the largest worker."""

    driver: float = 0.0
    driver_peak: float = 0.0
    services: float = 0.0  # raylet + gcs_server
    worker: float = 0.0  # the largest ray:: process now

    @classmethod
    def sample(cls, pid: int) -> Memory:
        memory = cls(_status_mb(pid, "VmRSS"), _status_mb(pid, "VmHWM"))
        for child, name in descendants(pid).items():
            rss = _status_mb(child, "VmRSS")
            if name in ("raylet", "gcs_server"):
                memory.services += rss
            elif name.startswith("ray::"):
                memory.worker = max(memory.worker, rss)
        return memory


@dataclass
class Block:
    images: int  # images finished at the block's end
    seconds: float  # since the command started
    memory: Memory
    worker_peak: float  # the largest worker_peak_rss_mb recorded in the block


@dataclass
class Run:
    blocks: list[Block] = field(default_factory=list)
    first: float | None = None  # seconds to the first finished image
    last: float = 0.0  # seconds to the last
    total: float = 0.0  # seconds to the command's exit
    driver_peak: float = 0.0
    failed: int = 0
    returncode: int = 0


class Journal:
    """New complete lines of OUTPUT/_manifest.journal since the last read."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.partial = path, 0, b""

    def read(self) -> list[dict]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        return [json.loads(line) for line in lines if line.strip()]


def follow(proc: subprocess.Popen, journal: Journal, block: int, start: float) -> Run:
    """Watch the batch until the command exits: a Block every ``block`` finished images."""
    run, done, peak_in_block = Run(), 0, 0.0
    memory, sampled = Memory(), 0.0
    while True:
        ended = proc.poll() is not None
        now = time.perf_counter() - start
        if now - sampled >= MEMORY_SECONDS and not ended:
            memory, sampled = Memory.sample(proc.pid), now
            run.driver_peak = max(run.driver_peak, memory.driver_peak)
        for record in journal.read():
            done += 1
            run.failed += record["status"] == "failed"
            peak_in_block = max(peak_in_block, record.get("worker_peak_rss_mb") or 0.0)
            run.first = now if run.first is None else run.first
            run.last = now
            if done % block == 0:
                run.blocks.append(Block(done, now, memory, peak_in_block))
                peak_in_block = 0.0
        if ended:
            run.total, run.returncode = now, proc.returncode
            return run
        time.sleep(POLL_SECONDS)


def run_batch(folder: Path, steps: int, block: int) -> Run:
    ray_dir = Path(tempfile.mkdtemp(prefix="kl-", dir="/tmp"))  # Ray's socket paths are short
    log = (folder / "restore.log").open("w")
    start = time.perf_counter()
    proc = subprocess.Popen(
        restore_command(folder, steps),
        cwd=folder,  # MLflow's default artifact root ./mlruns lands in the folder
        env=environment(folder, ray_dir),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        return follow(proc, Journal(folder / "out" / JOURNAL), block, start)
    finally:
        if proc.poll() is None:  # interrupted: stop the batch and its Ray cluster
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=60)
        log.close()
        shutil.rmtree(ray_dir, ignore_errors=True)


def core_seconds(folder: Path, steps: int, count: int) -> float:
    """Median seconds of ``pipeline.worker.process`` on ``count`` of the images (no Ray, no
    MLflow, 1 torch thread as a task of 1 CPU has)."""
    from knitwork.degradation import Degradation
    from knitwork.presets import get_preset
    from pipeline.driver import image_seed
    from pipeline.storage import open_storage
    from pipeline.worker import Job, process

    source, target = open_storage(str(folder / "in")), open_storage(str(folder / "core"))
    config = get_preset("fast-inpaint").with_steps(steps)
    times = []
    for name in source.list_images()[:count]:
        job = Job(name=name, input=source, output=target, config=config, threads=1,
                  degradation=Degradation(task="inpaint"), seed=image_seed(0, name),
                  config_hash="", synthetic=True)  # fmt: skip
        start = time.perf_counter()
        assert process(job).record.status == "ok"
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--size", type=int, default=16, help="image side, px (8 is too small)")
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--block", type=int, help="images per table row [images / 10]")
    parser.add_argument("--out", default="docs/benchmarks/load.md")
    args = parser.parse_args()
    block = args.block or max(1, args.images // 10)
    with tempfile.TemporaryDirectory(prefix="knitwork-load-") as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        make_images(folder / "in", args.images, args.size)
        print(f"{args.images} images written in {time.perf_counter() - start:.1f} s", flush=True)
        run = run_batch(folder, args.steps, block)
        log = (folder / "restore.log").read_text(errors="replace")
        if run.returncode != 0 or not run.blocks:
            sys.exit(f"restore exited {run.returncode}:\n{log[-3000:]}")
        store = {name: _size_mb(folder / name) for name in ("mlflow.db", "mlruns")}
        core = core_seconds(folder, args.steps, min(CORE_IMAGES, args.images))
    write_report(args, block, run, core, store)


def _size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


def write_report(args, block: int, run: Run, core: float, store: dict[str, float]) -> None:
    command = f"python benchmarks/load.py --images {args.images} --size {args.size} "
    command += f"--steps {args.steps} --block {block}"
    steady = (run.last - run.first) / max(1, args.images - 1)
    lines = [
        f"# Load run: {args.images} tiny images through `knitwork restore`",
        "",
        f"Command: `{command}`  ",
        f"Machine: {describe()}; run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; the 2 cores were "
        "shared with other jobs, so times are noisy.  ",
        f"Work: {args.images} PNGs of {args.size}×{args.size} px (seeded noise), `knitwork "
        f"restore IN OUT --task inpaint --synthetic --steps {args.steps} --quiet` (preset "
        "`fast-inpaint`, one image per Ray task, 1 CPU each, 2 at a time), a local Ray cluster "
        "on 127.0.0.1, MLflow on a sqlite file (one child run per image with its restored "
        "image, side-by-side and model), local folders.",
        "",
        f"Wall time {run.total:.0f} s: {run.first:.1f} s to the first finished image (Ray and "
        f"MLflow starting), {run.last - run.first:.0f} s for the rest, "
        f"{run.total - run.last:.1f} s after the last (compaction, closing the runs). "
        f"{run.failed} failed. Steady cost {steady:.3f} s per image "
        f"({3600 / steady:.0f} images / hour); the same fit in a plain loop "
        f"(`pipeline.worker.process`, no Ray, no MLflow, 1 thread) takes {core:.3f} s. "
        f"Driver peak RSS {run.driver_peak:.0f} MB. The MLflow store ended at "
        f"{store['mlflow.db']:.0f} MB (sqlite) + {store['mlruns']:.0f} MB (artifacts).",
        "",
        "Each row is a block of images in the order they finished; memory is sampled once a "
        "second (RSS, MB) and read at the block's end. *Worker peak* is the largest peak RSS "
        "that a block's records report for their worker.",
        "",
        "| images | block s | s / image | driver RSS | Ray raylet + GCS | largest worker now |"
        " worker peak |",
        "|---|---|---|---|---|---|---|",
    ]
    previous = run.first
    for i, b in enumerate(run.blocks):
        count = block - 1 if i == 0 else block  # the first block is timed from its 1st image
        seconds = b.seconds - previous
        lines.append(
            f"| {b.images - block + 1}–{b.images} | {seconds:.1f} | {seconds / count:.3f} | "
            f"{b.memory.driver:.0f} | {b.memory.services:.0f} | {b.memory.worker:.0f} | "
            f"{b.worker_peak:.0f} |"
        )
        previous = b.seconds
    publish(ROOT / args.out, lines)


if __name__ == "__main__":
    main()
