"""One image's work, as a Ray task runs it: read, fit, write the output, report.

``process(job)`` is plain Python (the Ray task wraps it), so it runs the same in a worker, in a
test or in a loop. It writes only the image's output; MLflow records are made by the driver
from what it returns, so one process writes to the tracking store. Images are decoded and
encoded in memory.
"""

from __future__ import annotations

import io
import os
import resource
import socket
import time
import traceback
from dataclasses import dataclass, field

import numpy as np

from knitwork import io as kio
from knitwork.checkpoint import model_bytes
from knitwork.config import Config
from knitwork.degradation import Degradation
from knitwork.fit import fit
from knitwork.report import comparison, fit_metrics, kernel_picture, learned_kernel
from knitwork.tasks import Observation
from pipeline.manifest import Record
from pipeline.storage import NotFound, Storage, StorageError

TRACEBACK_FRAMES = 3  # frames of an unexpected error's traceback kept in its record


@dataclass(frozen=True, kw_only=True)
class Job:
    name: str  # relative input name; also the output's and the mask's
    input: Storage
    output: Storage
    config: Config
    degradation: Degradation  # the task, and (with ``synthetic``) how to degrade the input
    seed: int  # this image's own seed (base seed + hash of its name)
    config_hash: str  # what decides the result; the manifest compares it on reruns
    synthetic: bool = False  # the input is clean: degrade it with ``degradation``, score it
    masks: Storage | None = None  # inpainting masks under the same names
    ground_truth: Storage | None = None  # clean images under the same names, for scoring
    max_pixels: int = kio.DEFAULT_MAX_PIXELS
    threads: int | None = None  # torch threads; None: leave torch's default

    @property
    def task(self) -> str:
        return self.degradation.task


@dataclass(kw_only=True)
class Outcome:
    record: Record
    history: list[dict[str, float]] = field(default_factory=list)
    artifacts: dict[str, bytes] = field(default_factory=dict)  # file name → content
    size: tuple[int, int] = (0, 0)  # (height, width)


def observation_of(job: Job, loaded: kio.LoadedImage) -> tuple[Observation, np.ndarray | None]:
    """The job's observation of the decoded input, and the truth to score against (if any)."""
    pixels, known = loaded.pixels, None
    if job.task == "inpaint" and job.masks is not None:
        data = job.masks.read(job.name)
        known = kio.decode_mask(data, job.masks.join(job.name), pixels.shape[:2], job.max_pixels)
    elif job.task == "inpaint" and loaded.alpha is not None:
        known = kio.known_from_alpha(loaded)
    if job.synthetic:
        return job.degradation.apply(pixels, job.seed, known)
    if job.task == "inpaint" and known is None:
        raise kio.ImageError(
            job.input.join(job.name),
            "inpainting needs to know the hole",
            "Give a --masks tree with the same names, an alpha channel, or use --synthetic",
        )
    obs = job.degradation.observe(pixels, known)
    return obs, _ground_truth(job, obs.output_shape)


def _ground_truth(job: Job, shape: tuple[int, int]) -> np.ndarray | None:
    if job.ground_truth is None:
        return None
    uri = job.ground_truth.join(job.name)
    truth = kio.decode_image(job.ground_truth.read(job.name), uri, job.max_pixels).pixels
    if truth.shape[:2] != shape:
        raise kio.ImageError(
            uri,
            f"size {truth.shape[1]}×{truth.shape[0]} differs from the "
            f"result's {shape[1]}×{shape[0]}",
        )
    return truth


def _failed(record: Record, err: Exception, start: float) -> Outcome:
    record.error = f"{type(err).__name__}: {err}"
    if not isinstance(err, ValueError | OSError):
        record.error += "\n" + traceback.format_exc(limit=TRACEBACK_FRAMES)
    record.seconds = time.perf_counter() - start
    return Outcome(record=record)


def process(job: Job) -> Outcome:
    """Restore one image. Bad inputs and failed fits come back as a failed record; storage
    errors propagate so that Ray can retry the task."""
    if job.threads:
        import torch

        torch.set_num_threads(job.threads)
    start = time.perf_counter()
    base = Record(
        input=job.name,
        output=job.output.join(job.name),
        status="failed",
        config_hash=job.config_hash,
        seed=job.seed,
        worker=f"{socket.gethostname()}:{os.getpid()}",
    )
    try:
        data = job.input.read(job.name)
        loaded = kio.decode_image(data, job.input.join(job.name), job.max_pixels)
        obs, truth = observation_of(job, loaded)
        result = fit(obs, job.config, seed=job.seed, ground_truth=truth)
        c = obs.image.shape[2]
        depth = 16 if loaded.bit_depth == 16 and c == 1 else 8
        job.output.write(job.name, kio.encode_image(result.image, job.name, depth))
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
        "restored.png": kio.encode_image(result.image, ".png"),
        "side_by_side.png": kio.encode_image(comparison(obs, result, truth), ".png"),
        "model.pt": model_bytes(result),
    }
    kernel = learned_kernel(result)
    if kernel is not None:
        artifacts["kernel.png"] = kio.encode_image(kernel_picture(kernel), ".png")
        buffer = io.BytesIO()
        np.save(buffer, kernel)
        artifacts["kernel.npy"] = buffer.getvalue()
    return Outcome(
        record=base, history=result.history, artifacts=artifacts, size=obs.image.shape[:2]
    )
