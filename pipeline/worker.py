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
from knitwork.packs import fit_packed
from knitwork.report import comparison, fit_metrics, kernel_picture, learned_kernel
from knitwork.result import FitResult
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
    pack: int | None = 1  # fits packed into one batched model (knitwork.packed); None: auto

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


def true_kernel(job: Job) -> np.ndarray | None:
    """The kernel that made a synthetic SR input (a learned one is scored against it)."""
    return job.degradation.true_kernel(job.seed) if job.synthetic and job.task == "sr" else None


def _failed(record: Record, err: Exception, start: float) -> Outcome:
    record.error = f"{type(err).__name__}: {err}"
    if not isinstance(err, ValueError | OSError):
        record.error += "\n" + traceback.format_exc(limit=TRACEBACK_FRAMES)
    record.seconds = time.perf_counter() - start
    return Outcome(record=record)


@dataclass(kw_only=True)
class _Prepared:
    """One image of a task, read and observed, waiting for its fit."""

    index: int
    job: Job
    record: Record
    start: float
    loaded: kio.LoadedImage
    observation: Observation
    truth: np.ndarray | None


def _record(job: Job) -> Record:
    return Record(
        input=job.name,
        output=job.output.join(job.name),
        status="failed",
        config_hash=job.config_hash,
        seed=job.seed,
        worker=f"{socket.gethostname()}:{os.getpid()}",
    )


def _prepare(index: int, job: Job) -> _Prepared:
    start, uri = time.perf_counter(), job.input.join(job.name)
    data = job.input.read(job.name)
    with kio.naming(uri):
        loaded = kio.decode_image(data, uri, job.max_pixels)
        obs, truth = observation_of(job, loaded)
    return _Prepared(
        index=index,
        job=job,
        record=_record(job),
        start=start,
        loaded=loaded,
        observation=obs,
        truth=truth,
    )


def _fit_each(prepared: list[_Prepared]) -> list[FitResult | Exception]:
    """Fit the images one by one, each failure kept as its own exception."""
    results: list[FitResult | Exception] = []
    for p in prepared:
        try:
            with kio.naming(p.job.input.join(p.job.name)):  # a too-small image names itself
                results.append(
                    fit(p.observation, p.job.config, seed=p.job.seed, ground_truth=p.truth)
                )
        except Exception as err:
            results.append(err)
    return results


def _fit_all(prepared: list[_Prepared]) -> list[FitResult | Exception]:
    """Fit a task's images packed as one batched model where they can share one
    (``knitwork.packed``); should the packed fit fail, each image is fitted alone so that one
    bad image never costs the others their results."""
    pack = prepared[0].job.pack if prepared else 1
    if len(prepared) > 1 and pack != 1:
        try:
            return fit_packed(
                [p.observation for p in prepared],
                prepared[0].job.config,
                seeds=[p.job.seed for p in prepared],
                ground_truths=[p.truth for p in prepared],
                pack=pack,
            )
        except Exception:
            pass
    return _fit_each(prepared)


def _finish(p: _Prepared, result: FitResult) -> Outcome:
    """Write the restored image and build the outcome (metrics, artifacts)."""
    job, obs, base = p.job, p.observation, p.record
    depth = 16 if p.loaded.bit_depth == 16 and obs.image.shape[2] == 1 else 8
    job.output.write(job.name, kio.encode_image(result.image, job.name, depth))
    base.status = "ok"
    base.worker_peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    base.metrics = fit_metrics(result, obs, p.truth, true_kernel(job)) | {"packed": result.packed}
    base.seconds = time.perf_counter() - p.start
    artifacts = {
        "restored.png": kio.encode_image(result.image, ".png"),
        "side_by_side.png": kio.encode_image(comparison(obs, result, p.truth), ".png"),
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


def process_pack(jobs: list[Job]) -> list[Outcome]:
    """Restore a task's images (fitted together where they can share a batch), in order. Bad
    inputs and failed fits come back as failed records; storage errors propagate so that Ray
    can retry the task."""
    if jobs and jobs[0].threads:
        import torch

        torch.set_num_threads(jobs[0].threads)
    outcomes: dict[int, Outcome] = {}
    prepared: list[_Prepared] = []
    for index, job in enumerate(jobs):
        start = time.perf_counter()
        try:
            prepared.append(_prepare(index, job))
        except StorageError as err:
            if not isinstance(err, NotFound):
                raise  # transient (endpoint down, throttled): Ray retries the task
            outcomes[index] = _failed(_record(job), err, start)
        except Exception as err:  # one image's failure is recorded, never fatal to the batch
            outcomes[index] = _failed(_record(job), err, start)
    for p, result in zip(prepared, _fit_all(prepared), strict=True):
        try:
            if isinstance(result, Exception):
                raise result
            outcomes[p.index] = _finish(p, result)
        except NotFound as err:
            outcomes[p.index] = _failed(p.record, err, p.start)
        except StorageError:
            raise
        except Exception as err:
            outcomes[p.index] = _failed(p.record, err, p.start)
    return [outcomes[i] for i in range(len(jobs))]


def process(job: Job) -> Outcome:
    """Restore one image (a task of one)."""
    return process_pack([job])[0]
