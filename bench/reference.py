"""The reference stylebox is measured against: the seed project's algorithm done right.

Same network and objective as stylebox (paper layers, Caffe VGG-19, normalised losses), one scale at
the output size, L-BFGS as torch ships it (no line search) on the pixels from the content photo,
a fixed number of evaluations, clamped once at the end. Run as a command, it is the peer's
whole process, as `stylebox stylize` is ours (bench.time_to_quality times both from outside):

    python -m bench.reference PHOTO PAINTING OUT.png [--size 256] [--evaluations 300] [--device cpu]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import Tensor

from daemon import pipeline
from daemon.config import StyleImage
from daemon.engine import transfer
from daemon.engine.device import Models, resolve_device
from daemon.engine.settings import StyleSettings
from daemon.engine.vgg import VGGFeatures
from daemon.media import encode


def reference_stylize(
    model: VGGFeatures,
    content: Tensor,
    styles: list[transfer.Style],
    settings: StyleSettings,
    evaluations: int = 300,
) -> tuple[Tensor, list[tuple[float, float]]]:
    """Returns the clamped image (3, H, W) and (seconds, objective) after every evaluation."""
    started = time.perf_counter()
    device = next(model.parameters()).device
    h, w = content.shape[-2:]
    size = transfer.fit_size(h, w, min(settings.size, max(h, w)))
    photo = transfer.resize(content.to(device), size)
    grams = transfer.style_grams_for(model, settings, styles, max(size))
    objective = transfer.Objective(model, settings, photo, grams)
    x = photo[None].contiguous().clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [x], lr=1, max_iter=evaluations, max_eval=evaluations, tolerance_grad=0, tolerance_change=0
    )
    history: list[tuple[float, float]] = []

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss, losses = objective(x)
        loss.backward()
        history.append((time.perf_counter() - started, losses.total))
        return loss

    optimizer.step(closure)
    return x.detach()[0].clamp(0, 255).cpu(), history


def main() -> None:
    """Load like `stylebox stylize`, run the reference, save an 8-bit PNG."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("photo", type=Path)
    parser.add_argument("painting", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--evaluations", type=int, default=300)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    settings = StyleSettings(size=args.size)
    models = Models(resolve_device(args.device))
    styles = pipeline.load_styles([StyleImage(args.painting)], settings, max_pixels=10**9)
    photo = pipeline.load_photo(args.photo, settings, max_pixels=10**9)
    content = pipeline.to_tensor(photo.pixels).to(models.device)
    model = models.for_settings(settings)
    image, _ = reference_stylize(model, content, styles, settings, args.evaluations)
    encode.save_image(pipeline.to_pixels(image), args.out, format="png")


if __name__ == "__main__":
    main()
