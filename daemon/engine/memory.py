"""How much memory a stylisation needs, so a size or a batch the device cannot hold is reduced
before it runs instead of failing on out-of-memory after minutes."""

import math

from daemon.engine.lbfgs import LBFGS_HISTORY
from daemon.engine.vgg import MIN_SIDE

# Peak device memory of a run, measured on an H200 in fp32: one evaluation (activations kept for
# the backward pass) 2.3 KB per output pixel (0.55 GiB at 512 x 384, 7.1 GiB at 2048 x 1536), and
# L-BFGS's history of 2 x 100 full-image vectors 2.4 KB more (3.7 GiB in all at 1024 x 768).
LBFGS_BYTES_PER_PIXEL = 2 * LBFGS_HISTORY * 3 * 4  # its old directions and steps, RGB fp32
BYTES_PER_PIXEL = 2300 + LBFGS_BYTES_PER_PIXEL
BASE_BYTES = 150 * 2**20  # the network's weights to relu5_1 and the style targets


def estimated_bytes(height: int, width: int) -> int:
    """Memory one stylisation at this output size needs at its peak (see BYTES_PER_PIXEL)."""
    return BASE_BYTES + BYTES_PER_PIXEL * height * width


def photos_fitting(height: int, width: int, budget_bytes: int) -> int:
    """How many photos of this output size one batch can hold within `budget_bytes`: each has
    its own activations and L-BFGS history; the network and targets are shared."""
    return max(0, budget_bytes - BASE_BYTES) // (BYTES_PER_PIXEL * height * width)


def largest_fitting_side(height: int, width: int, budget_bytes: int) -> int:
    """The largest long side, aspect kept, whose run fits `budget_bytes` (at least 16 px)."""
    pixels = max(0, budget_bytes - BASE_BYTES) / BYTES_PER_PIXEL
    return max(MIN_SIDE, math.floor(max(height, width) * math.sqrt(pixels / (height * width))))
