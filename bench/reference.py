"""The reference stylebox is measured against: the seed project's algorithm done right.

Same network and objective as stylebox (paper layers, Caffe VGG-19, normalised losses), one scale at
the output size, L-BFGS as torch ships it (no line search) on the pixels from the content photo,
a fixed number of evaluations, clamped once at the end.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from daemon.engine import transfer
from daemon.engine.settings import StyleSettings
from daemon.engine.vgg import VGGFeatures


def reference_stylise(
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
