"""One image's work, as a Ray task runs it: read, fit, write the output, report.

``process(job)`` is plain Python (the Ray task wraps it), so it runs the same in a worker, in a
test or in a loop. It writes only the image's output; MLflow records are made by the driver
from what it returns, so one process writes to the tracking store.
"""

from __future__ import annotations

import io
import os
import resource
import socket
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from knitwork import io as kio
from knitwork.config import Config
from knitwork.fit import fit
from knitwork.report import comparison, fit_metrics, kernel_picture, learned_kernel
from knitwork.tasks import degrade, observe, sr_observation
from pipeline.manifest import Record
from pipeline.storage import NotFound, Storage, StorageError


@dataclass(frozen=True)
class Job:
    name: str  # relative input name; also the output's and the mask's
    input: Storage
    output: Storage
    task: str
    config: Config
    seed: int
    config_hash: str
    masks: Storage | None = None
    ground_truth: Storage | None = None
    synthetic: bool = False
    fill_ratio: float = 0.02
    sigma: float = 25.0
    scale: int = 2  # sr
    kernel: str = "learned"  # sr: kernel spec (knitwork.kernels.parse_kernel)
    degrade_kernel: str | None = None  # sr with synthetic: the degradation's kernel spec
    max_pixels: int = kio.DEFAULT_MAX_PIXELS
    threads: int | None = None  # torch threads; None: leave torch's default


@dataclass
class Outcome:
    record: Record
    history: list[dict[str, float]] = field(default_factory=list)
    artifacts: dict[str, bytes] = field(default_factory=dict)  # file name → content
    size: tuple[int, int] = (0, 0)  # (height, width)


def _load_bytes(data: bytes, uri: str, load):
    """Run a knitwork.io loader on bytes (via a temporary file); errors name ``uri``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("input" + PurePosixPath(uri).suffix)
        path.write_bytes(data)
        try:
            return load(path)
        except kio.ImageError as err:
            raise kio.ImageError(uri, err.problem, err.hint) from None


def decode(data: bytes, uri: str, max_pixels: int) -> kio.LoadedImage:
    """Decode image bytes with knitwork.io's checks."""
    return _load_bytes(data, uri, lambda path: kio.load_image(path, max_pixels=max_pixels))


def encode(pixels: np.ndarray, name: str, bit_depth: int = 8) -> bytes:
    """Image bytes in the format of ``name``'s extension."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "out" + PurePosixPath(name).suffix.lower())
        kio.save_image(path, pixels, bit_depth=bit_depth)
        with open(path, "rb") as handle:
            return handle.read()


def _observation(job: Job, loaded: kio.LoadedImage):
    pixels = loaded.pixels
    if job.task == "sr":
        obs, truth = sr_observation(
            pixels, job.scale, job.kernel, job.synthetic, job.seed, job.degrade_kernel
        )
        return obs, truth if truth is not None else _ground_truth(job, obs.output_shape)
    known = None
    if job.task == "inpaint" and job.masks is not None:
        known = _mask(job, pixels.shape[:2])
    elif job.task == "inpaint" and loaded.alpha is not None:
        known = kio.known_from_alpha(loaded)
    if job.synthetic:
        if known is not None:
            return observe("inpaint", pixels * known[:, :, None], known), pixels
        return degrade(job.task, pixels, job.seed, job.fill_ratio, job.sigma), pixels
    if job.task == "inpaint" and known is None:
        raise kio.ImageError(
            job.input.join(job.name),
            "inpainting needs to know the hole",
            "Give a --masks tree with the same names, an alpha channel, or use --synthetic",
        )
    return observe(job.task, pixels, known), _ground_truth(job, pixels.shape[:2])


def _ground_truth(job: Job, shape: tuple[int, int]) -> np.ndarray | None:
    if job.ground_truth is None:
        return None
    uri = job.ground_truth.join(job.name)
    truth = decode(job.ground_truth.read(job.name), uri, job.max_pixels).pixels
    if truth.shape[:2] != shape:
        raise kio.ImageError(
            uri,
            f"size {truth.shape[1]}×{truth.shape[0]} differs from the "
            f"result's {shape[1]}×{shape[0]}",
        )
    return truth


def _mask(job: Job, shape: tuple[int, int]) -> np.ndarray:
    def load(path):
        return kio.load_mask(path, shape, max_pixels=job.max_pixels)

    return _load_bytes(job.masks.read(job.name), job.masks.join(job.name), load)


def _model_bytes(result) -> bytes:
    from knitwork.checkpoint import save_model

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.pt")
        save_model(result, path)
        with open(path, "rb") as handle:
            return handle.read()


def _failed(record: Record, err: Exception, start: float) -> Outcome:
    record.error = f"{type(err).__name__}: {err}"
    if not isinstance(err, ValueError | OSError):
        record.error += "\n" + traceback.format_exc(limit=3)
    record.seconds = time.perf_counter() - start
    return Outcome(record)


def process(job: Job) -> Outcome:
    """Restore one image. Bad inputs and failed fits come back as a failed record; storage
    errors propagate so that Ray can retry the task."""
    if job.threads:
        import torch

        torch.set_num_threads(job.threads)
    start = time.perf_counter()
    base = Record(
        job.name,
        job.output.join(job.name),
        "failed",
        config_hash=job.config_hash,
        seed=job.seed,
        worker=f"{socket.gethostname()}:{os.getpid()}",
    )
    try:
        loaded = decode(job.input.read(job.name), job.input.join(job.name), job.max_pixels)
        obs, truth = _observation(job, loaded)
        result = fit(obs, job.config, seed=job.seed, ground_truth=truth)
        c = obs.image.shape[2]
        depth = 16 if loaded.bit_depth == 16 and c == 1 else 8
        job.output.write(job.name, encode(result.image, job.name, depth))
    except NotFound as err:
        return _failed(base, err, start)
    except StorageError:
        raise  # transient (endpoint down, throttled): Ray retries the task
    except Exception as err:  # one image's failure is recorded, never fatal to the batch
        return _failed(base, err, start)
    base.status = "ok"
    base.worker_peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    base.metrics = fit_metrics(result, obs, truth)
    base.seconds = time.perf_counter() - start
    artifacts = {
        "restored.png": encode(result.image, "x.png"),
        "side_by_side.png": encode(comparison(obs, result, truth), "x.png"),
        "model.pt": _model_bytes(result),
    }
    kernel = learned_kernel(result)
    if kernel is not None:
        artifacts["kernel.png"] = encode(kernel_picture(kernel), "x.png")
        buffer = io.BytesIO()
        np.save(buffer, kernel)
        artifacts["kernel.npy"] = buffer.getvalue()
    return Outcome(base, result.history, artifacts, obs.image.shape[:2])
