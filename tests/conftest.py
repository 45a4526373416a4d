"""Shared fixtures: small real images from examples/ and a shrunken-config helper."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from knitwork.config import Config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "images"

# Two cores: one pytest process uses both; under pytest-xdist (`-n 2`) each worker takes one.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


def example_image(name: str = "butterfly", size: int = 32) -> np.ndarray:
    """An example image resized to size×size, as (H, W, 3) float32 in [0, 1]."""
    with Image.open(EXAMPLES / f"{name}.png") as img:
        small = img.convert("RGB").resize((size, size), Image.LANCZOS)
    return np.asarray(small, dtype=np.float32) / 255.0


def shrink(config: Config, steps: int = 3) -> Config:
    """The same method on a CPU smoke-test budget: few steps, CPU, logging every step."""
    optim = dataclasses.replace(config.optim, steps=steps, device="cpu", log_every=1)
    return config.replace(optim=optim)


def learning_kernel(config: Config) -> Config:
    """``config`` with blind SR's kernel learned with the image (the paper's way; fast-sr
    estimates it first): for tests of the learned downsampler."""
    return config.replace(model=dataclasses.replace(config.model, blind_kernel="learn"))


@pytest.fixture(autouse=True)
def environment_restored():
    """os.environ as it was before the test: a command run in-process (``main(argv)``) sets
    the environment of its process (a quiet MLflow console, S3 and Ray settings), which must
    not reach the next test's subprocesses (it once hid ``--verbose``'s MLflow lines). What
    session fixtures set before the test stays."""
    before = dict(os.environ)
    yield
    if dict(os.environ) != before:
        os.environ.clear()
        os.environ.update(before)


@pytest.fixture
def tiny() -> np.ndarray:
    return example_image("butterfly", 32)


# Real services (S3 on moto, a local Ray cluster, MLflow) for tests/pipeline and tests/tune.
from tests.services import bucket, mlflow_server, ray_cluster, s3_endpoint, tracking  # noqa: E402, F401
