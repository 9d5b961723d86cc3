"""How much memory a stylisation needs, so that a size or a batch the device cannot hold is run
in blocks (engine.blocks), with less L-BFGS history, or smaller, before it starts, instead of
failing on out-of-memory after minutes.

A whole-image evaluation keeps every layer's activations for the backward pass: ACTIVATION_BYTES
per output pixel (a measurement: where, how and by what command is in DECISIONS.md, memory bound,
kept there so that it is re-measured, not trusted, as the network code changes). In blocks only
one crop's activations are alive at a time, and what remains per pixel of the whole image is its
storage: the image, its gradient and best copy, the photo's content features (relu4_2: 512
channels at 1/8 the side, fp32) and L-BFGS's history of 2 x pairs image-sized vectors.
"""

import math
from collections.abc import Callable

from daemon.engine.blocks import MARGIN, tile_for
from daemon.engine.lbfgs import LBFGS_HISTORY
from daemon.engine.vgg import MIN_SIDE

ACTIVATION_BYTES = 2300  # per pixel of one evaluation at once (DECISIONS.md, memory bound)
PAIR_BYTES = 2 * 3 * 4  # one L-BFGS pair per pixel: a step and a gradient change, RGB fp32
LBFGS_BYTES_PER_PIXEL = LBFGS_HISTORY * PAIR_BYTES
BYTES_PER_PIXEL = ACTIVATION_BYTES + LBFGS_BYTES_PER_PIXEL
STORAGE_BYTES = 3 * 3 * 4 + 512 * 4 // 64  # image, gradient, best; relu4_2's content target
BASE_BYTES = 150 * 2**20  # the network's weights to relu5_1 and the style targets
MIN_HISTORY = 5  # L-BFGS pairs below which a size is not run whole-image-exact any more
MIN_TILE = 256  # px: smaller tiles spend most of their work on the margins
MAX_TILE = 2048

# (block px or None for the whole image, L-BFGS pairs) for a stage of size (H, W).
Fit = Callable[[tuple[int, int]], tuple[int | None, int]]


def estimated_bytes(height: int, width: int) -> int:
    """Memory one whole-image stylisation at this output size needs at its peak."""
    return BASE_BYTES + BYTES_PER_PIXEL * height * width


def photos_fitting(height: int, width: int, budget_bytes: int) -> int:
    """How many photos of this output size one batch can hold whole within `budget_bytes`: each
    has its own activations and L-BFGS history; the network and targets are shared. 0: not one,
    whole (a lone photo then runs in blocks: `fit_for`)."""
    return max(0, budget_bytes - BASE_BYTES) // (BYTES_PER_PIXEL * height * width)


def fit_for(budget_bytes: int, photos: int = 1, block: int | None = None) -> Fit:
    """How each stage of a run of `photos` photos fits `budget_bytes`: whole with the full
    L-BFGS history where it can; else in blocks, the history given at most half of what the
    image's storage leaves (at least MIN_HISTORY pairs: past a few dozen, more pairs buy little)
    and the crops the rest (the largest tile that fits, at most MAX_TILE: fewer, larger crops
    spend less of their work on margins). `block` forces blocks of
    that size (tests, benchmarks). A size that does not fit even so gets the smallest tile and
    history: `largest_side` says what does, and the pipeline refuses it up front."""

    def fit(size: tuple[int, int]) -> tuple[int | None, int]:
        pixels = size[0] * size[1] * photos
        if block is None and BASE_BYTES + BYTES_PER_PIXEL * pixels <= budget_bytes:
            return None, LBFGS_HISTORY
        crop_bytes = ACTIVATION_BYTES * photos
        room = budget_bytes - BASE_BYTES - STORAGE_BYTES * pixels
        smallest_crop = crop_bytes * (MIN_TILE + 2 * MARGIN) ** 2
        history = (room - smallest_crop) // 2 // (PAIR_BYTES * pixels) if pixels else LBFGS_HISTORY
        history = max(MIN_HISTORY, min(LBFGS_HISTORY, history))
        if block is not None:
            return tile_for(block), history
        left = room - history * PAIR_BYTES * pixels
        side = math.isqrt(max(0, left) // crop_bytes) - 2 * MARGIN
        return tile_for(max(MIN_TILE, min(MAX_TILE, side))), history

    return fit


def largest_pixels(budget_bytes: int) -> int:
    """The most output pixels one photo can be run at within `budget_bytes`, in blocks if need
    be (MIN_TILE tiles, MIN_HISTORY pairs)."""
    crop = ACTIVATION_BYTES * (MIN_TILE + 2 * MARGIN) ** 2
    per_pixel = STORAGE_BYTES + MIN_HISTORY * PAIR_BYTES
    return max(0, budget_bytes - BASE_BYTES - crop) // per_pixel


def largest_side(height: int, width: int, budget_bytes: int) -> int:
    """The largest long side, aspect kept, that one photo can be run at within `budget_bytes`;
    at least MIN_SIDE px."""
    pixels = largest_pixels(budget_bytes)
    return max(MIN_SIDE, math.floor(max(height, width) * math.sqrt(pixels / (height * width))))
