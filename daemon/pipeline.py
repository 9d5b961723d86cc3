"""Photos through the stages, top to bottom: load -> stylise -> save. Shared by the one-shot CLI
and the daemon's worker, so both produce the same picture from the same preset.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from loguru import logger

from daemon import engine, imaging
from daemon.config import StyleImage
from daemon.errors import UsageError
from daemon.settings import StyleSettings
from daemon.vgg import VGGFeatures, load_vgg


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when present, else CPU; asking for an absent CUDA device is a usage error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} asked for, but no CUDA device is available")
    return torch.device(name)


@dataclass
class Models:
    """The VGG networks in use on one device, built once: one process, one resident model."""

    device: torch.device
    _by_key: dict[tuple, VGGFeatures] = field(default_factory=dict)

    def memory_budget_bytes(self) -> int:
        """What one run may use: free device memory plus what torch already holds, or on the
        CPU the memory the system has available."""
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            held = torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(
                self.device
            )
            return free + held
        return _available_ram_bytes()

    def for_settings(self, settings: StyleSettings) -> VGGFeatures:
        """The network for these settings' weights, pooling and layers (built on first use)."""
        layers = tuple(sorted(set(engine.layers_needed(settings))))
        key = (settings.weights, settings.pooling, layers)
        if key not in self._by_key:
            self._by_key[key] = load_vgg(
                settings.weights, layers, pooling=settings.pooling, device=self.device
            )
        return self._by_key[key]


def _available_ram_bytes() -> int:
    """MemAvailable (free plus reclaimable cache); free pages alone undercount a busy host."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """H x W x 3 float array -> (3, H, W) tensor, no copy where possible."""
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)


def to_pixels(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) tensor -> H x W x 3 float32 array for imaging.save_image."""
    return image.detach().float().cpu().permute(1, 2, 0).numpy()


def load_styles(
    sources: Sequence[StyleImage], settings: StyleSettings, *, max_pixels: int
) -> list[engine.Style]:
    """Read the style images at the size the output needs (upscaled if small); the engine
    resizes from there, antialiased, at each scale."""
    long_side = math.ceil(settings.style_scale * settings.size)
    styles = []
    for source in sources:
        loaded = imaging.load_image(
            source.path, max_pixels=max_pixels, long_side=long_side, upscale=True
        )
        styles.append(engine.Style(to_tensor(loaded.pixels), source.weight))
    return styles


def load_photo(
    path: Path, settings: StyleSettings, *, max_pixels: int, follow_symlinks: bool = True
) -> imaging.LoadedImage:
    """The photo at the preset's size (never upscaled)."""
    return imaging.load_image(
        path, max_pixels=max_pixels, long_side=settings.size, follow_symlinks=follow_symlinks
    )


def room_for(size: tuple[int, int], models: Models) -> int:
    """How many photos with results of this size the device holds in one batch."""
    return engine.photos_fitting(*size, models.memory_budget_bytes())


def stylise_photos(
    photos: Sequence[tuple[str, imaging.LoadedImage]],
    styles: Sequence[engine.Style],
    settings: StyleSettings,
    models: Models,
    *,
    targets: engine.StyleTargets | None = None,
    callback: Callable[[engine.Progress], None] | None = None,
) -> list[engine.Result]:
    """Stylise named photos with one output size together (engine.stylise_batch; the caller
    keeps a batch within `room_for`). A lone photo the device cannot hold at that size is
    stylised smaller, with a log line: a 24-megapixel photo at a huge size must not OOM forever."""
    if len(photos) == 1:
        ((name, photo),) = photos
        settings = _fitted(name, photo, settings, models)
    model = models.for_settings(settings)
    contents = [to_tensor(photo.pixels) for _, photo in photos]
    return engine.stylise_batch(
        model, contents, styles, settings, targets=targets, callback=callback
    )


def _fitted(
    name: str, photo: imaging.LoadedImage, settings: StyleSettings, models: Models
) -> StyleSettings:
    """`settings`, with the size reduced to what the device holds for this photo."""
    height, width = photo.pixels.shape[:2]
    fitting = engine.largest_fitting_side(height, width, models.memory_budget_bytes())
    if fitting >= max(height, width):
        return settings
    logger.warning(
        "{}: {}x{} px would need {:.1f} GiB on {}, more than is free; stylising at {} px",
        name,
        width,
        height,
        engine.estimated_bytes(height, width) / 2**30,
        models.device,
        fitting,
    )
    return dataclasses.replace(settings, size=fitting)


def stylise_file(
    photo_path: Path,
    styles: Sequence[engine.Style],
    settings: StyleSettings,
    models: Models,
    *,
    max_pixels: int,
    callback: Callable[[engine.Progress], None] | None = None,
) -> tuple[engine.Result, imaging.LoadedImage]:
    """One photo file, loaded and stylised (the one-shot CLI's path)."""
    photo = load_photo(photo_path, settings, max_pixels=max_pixels)
    named = [(photo_path.name, photo)]
    (result,) = stylise_photos(named, styles, settings, models, callback=callback)
    return result, photo


def image_writer(
    result: engine.Result, photo: imaging.LoadedImage, *, format: str, quality: int, bit_depth: int
) -> Callable[[BinaryIO], None]:
    """A callback that writes the result with the photo's EXIF (for outbox.atomic_write)."""
    pixels = to_pixels(result.image)

    def write(file: BinaryIO) -> None:
        imaging.save_image(
            pixels, file, format=format, quality=quality, exif=photo.exif, bit_depth=bit_depth
        )

    return write
