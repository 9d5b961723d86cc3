"""One photo through the stages, top to bottom: load -> stylise -> save. Shared by the one-shot CLI
and the daemon's worker, so both produce the same picture from the same preset.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

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

    def for_settings(self, settings: StyleSettings) -> VGGFeatures:
        """The network for these settings' weights, pooling and layers (built on first use)."""
        layers = tuple(sorted(set(engine.layers_needed(settings))))
        key = (settings.weights, settings.pooling, layers)
        if key not in self._by_key:
            self._by_key[key] = load_vgg(
                settings.weights, layers, pooling=settings.pooling, device=self.device
            )
        return self._by_key[key]


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


def stylise_file(
    photo_path: Path,
    styles: Sequence[engine.Style],
    settings: StyleSettings,
    models: Models,
    *,
    max_pixels: int,
    targets: engine.StyleTargets | None = None,
    callback: Callable[[engine.Progress], None] | None = None,
) -> tuple[engine.Result, imaging.LoadedImage]:
    """Load the photo at the preset's size (never upscaled) and stylise it."""
    photo = imaging.load_image(photo_path, max_pixels=max_pixels, long_side=settings.size)
    model = models.for_settings(settings)
    result = engine.stylise(
        model, to_tensor(photo.pixels), styles, settings, targets=targets, callback=callback
    )
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
