"""Photos through the stages, top to bottom: load -> stylise -> save. Shared by the one-shot CLI
and the daemon's worker, so both produce the same picture from the same preset.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from loguru import logger

from daemon import __version__
from daemon.config import Preset, StyleImage
from daemon.engine import memory, transfer
from daemon.engine.device import Models
from daemon.engine.settings import FULL_SIZE, StyleSettings
from daemon.media import decode, encode

PREVIEW_QUALITY = 80  # a glance at the work in progress, not a result
# A `size: full` preset is warned about by `stylebox check` when the device cannot paint a
# photo this large at its own size (the largest phone and medium-format sensors: 100-200 MP).
FULL_MEGAPIXELS_CHECKED = 100


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """H x W x 3 float array -> (3, H, W) tensor, no copy where possible."""
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)


def to_pixels(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) tensor -> H x W x 3 float32 array for encode.save_image."""
    return image.detach().float().cpu().permute(1, 2, 0).numpy()


def load_styles(
    sources: Sequence[StyleImage], settings: StyleSettings, *, max_pixels: int
) -> list[transfer.Style]:
    """Read the style images at the size the output needs, or their own if smaller: the engine
    resizes from there, antialiased, at each scale, and upsamples a small painting only where
    it must (a coarse stage; engine.stages), never at a finer one."""
    long_side = math.ceil(settings.style_scale * settings.size)
    styles = []
    for source in sources:
        loaded = decode.load_image(source.path, max_pixels=max_pixels, long_side=long_side)
        styles.append(transfer.Style(to_tensor(loaded.pixels), source.weight))
    return styles


def load_photo(
    path: Path, settings: StyleSettings, *, max_pixels: int, follow_symlinks: bool = True
) -> decode.LoadedImage:
    """The photo at the preset's size (never upscaled)."""
    return decode.load_image(
        path, max_pixels=max_pixels, long_side=settings.size, follow_symlinks=follow_symlinks
    )


def room_for(size: tuple[int, int], models: Models) -> int:
    """How many photos with results of this size the device holds in one batch."""
    return memory.photos_fitting(*size, models.memory_budget_bytes())


def stylize_photos(
    photos: Sequence[tuple[str, decode.LoadedImage]],
    styles: Sequence[transfer.Style],
    settings: StyleSettings,
    models: Models,
    *,
    targets: transfer.StyleTargets | None = None,
    callback: Callable[[transfer.Progress], None] | None = None,
    block: int | None = None,
) -> list[transfer.Result]:
    """Stylise named photos with one output size together (transfer.stylize_batch; the caller
    keeps a batch within `room_for`). A stage the device cannot hold whole runs in blocks
    (engine.memory.fit_for; `block` forces blocks of that size); a lone photo too large even so
    is stylised at the largest size that fits, with a log line, never left to run out of
    memory."""
    budget = models.memory_budget_bytes()
    if len(photos) == 1:
        ((name, photo),) = photos
        settings = _fitted(name, photo, settings, models, budget)
    model = models.for_settings(settings)
    contents = [to_tensor(photo.pixels) for _, photo in photos]
    return transfer.stylize_batch(
        model,
        contents,
        styles,
        settings,
        targets=targets,
        callback=callback,
        precision=models.precision,
        fit=memory.fit_for(budget, len(photos), block),
    )


def _fitted(
    name: str, photo: decode.LoadedImage, settings: StyleSettings, models: Models, budget: int
) -> StyleSettings:
    """`settings`, with the size reduced to what the device holds for this photo, in blocks."""
    height, width = photo.pixels.shape[:2]
    fitting = memory.largest_side(height, width, budget)
    if fitting >= max(height, width):
        return settings
    logger.warning(
        "{}: {}x{} px does not fit in the {:.1f} GiB it may use on {}, even in blocks; "
        "stylising at {} px",
        name,
        width,
        height,
        budget / 2**30,
        models.device,
        fitting,
    )
    return dataclasses.replace(settings, size=fitting)


def sizes_out_of_reach(presets: Mapping[str, Preset], budget_bytes: int, device: str) -> list[str]:
    """A warning for each preset whose size this device cannot paint, with what it can: a
    number of px that a square photo (the most pixels for a long side) would exceed, or `full`
    below the largest sensors' FULL_MEGAPIXELS_CHECKED. Such photos are painted, at the largest
    size that fits (`_fitted`), so this is a warning: a busy machine has less free later, an
    idle one more. `budget_bytes`: Models.memory_budget_bytes on `device`."""
    pixels = memory.largest_pixels(budget_bytes)
    room = f"{device} with {budget_bytes / 2**30:.1f} GiB to use"
    warnings = []
    for name, preset in presets.items():
        size = preset.settings.size
        if size == FULL_SIZE and pixels < FULL_MEGAPIXELS_CHECKED * 1_000_000:
            warnings.append(
                f"preset {name}: size full: {room} paints at most {pixels / 1e6:.0f} MP; a "
                "larger photo is painted at the largest size that fits"
            )
        elif size != FULL_SIZE and size * size > pixels:
            warnings.append(
                f"preset {name}: size {size} px: {room} paints a square photo at most "
                f"{math.isqrt(pixels)} px, a 3:2 one {math.isqrt(pixels * 3 // 2)} px; a photo "
                "beyond that is painted at the largest size that fits"
            )
    return warnings


def stylize_file(
    photo_path: Path,
    styles: Sequence[transfer.Style],
    settings: StyleSettings,
    models: Models,
    *,
    max_pixels: int,
    callback: Callable[[transfer.Progress], None] | None = None,
    block: int | None = None,
) -> tuple[transfer.Result, decode.LoadedImage]:
    """One photo file, loaded and stylised (the one-shot CLI's path)."""
    photo = load_photo(photo_path, settings, max_pixels=max_pixels)
    named = [(photo_path.name, photo)]
    (result,) = stylize_photos(named, styles, settings, models, callback=callback, block=block)
    return result, photo


def preview_writer(progress: transfer.Progress) -> Callable[[BinaryIO], None]:
    """A callback that writes the photo as painted so far, a JPEG for the web page to show."""
    pixels = to_pixels(progress.picture())

    def write(file: BinaryIO) -> None:
        encode.save_image(pixels, file, format="jpeg", quality=PREVIEW_QUALITY)

    return write


def image_writer(
    result: transfer.Result,
    photo: decode.LoadedImage,
    *,
    format: str,
    quality: int,
    bit_depth: int,
    preset: str = "stylize",
    strip_location: bool = False,
) -> Callable[[BinaryIO], None]:
    """A callback that writes the result with the photo's EXIF and what made it (for
    outbox.atomic_write). The one-shot CLI names no preset: "stylize", its sub-command, says
    how the result was made even when its styles were several files blended."""
    pixels = to_pixels(result.image)
    provenance = encode.Provenance(f"stylebox {__version__}", preset)

    def write(file: BinaryIO) -> None:
        encode.save_image(
            pixels,
            file,
            format=format,
            quality=quality,
            exif=photo.exif,
            bit_depth=bit_depth,
            provenance=provenance,
            strip_location=strip_location,
        )

    return write
