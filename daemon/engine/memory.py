"""How much memory a stylisation needs, so a size or a batch the device cannot hold is reduced
before it runs instead of failing on out-of-memory after minutes."""

import math

from daemon.engine.lbfgs import LBFGS_HISTORY
from daemon.engine.vgg import MIN_SIDE

# Peak device memory of a run: one evaluation's activations, kept for the backward pass (the 2300
# below, bytes per output pixel, is a measurement: where, how and by what command is in
# DECISIONS.md, memory bound, kept there so that it is re-measured, not trusted, as the network
# code changes), plus L-BFGS's history.
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
