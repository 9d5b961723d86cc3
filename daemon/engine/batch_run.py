"""One run of the optimiser over a batch of photos of one size: each photo's best image, its
trail and stopping, the phases of arithmetic, and the L-BFGS (or Adam) loop that drives them.

The objective (`objective.Objective`, or `blocks.BlockObjective` for sizes run in blocks) gives
each evaluation's terms and gradient; this module decides what is kept and when a photo is done.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from daemon.engine.lbfgs import LBFGS_HISTORY, BatchLBFGS
from daemon.engine.objective import Losses
from daemon.engine.settings import StyleSettings
from daemon.engine.stages import Position

# Per `finish`: (window, tolerance) of the stopping test, which ends a run once its best
# objective fell by less than `tolerance` (relative) over the last `window` evaluations
# (DECISIONS.md, stopping rule). `steps` (or DEFAULT_EVALUATIONS) bounds every run.
BF16_AFTER = 10  # fp32 evaluations before a bf16 phase (see _optimize_together)
STOPPING: dict[str, tuple[int, float]] = {
    "draft": (20, 0.02),
    "standard": (20, 0.0075),
    "fine": (20, 0.002),
}


@dataclass(frozen=True)
class Progress:
    """Reported to the caller's callback after every objective evaluation."""

    evaluation: int  # of this stage
    budget: int  # at most this many evaluations in this stage
    losses: Losses  # this evaluation's: a line search's trial may be far worse than the picture
    best: float | None  # the stage's best objective so far, at its size (None: none finite)
    item: int  # which photo of the batch
    # The best image so far as it would be the result, (3, H, W) RGB 0-255 on the CPU; a copy
    # from the device, so for a seldom preview, not for every report.
    picture: Callable[[], Tensor] = field(repr=False, compare=False)
    position: Position  # which stage of how many (coarse to fine: engine.stages)
    stage_seconds: float  # since this stage's first evaluation began


class Evaluating(Protocol):
    """What a phase's objective gives: the terms of a batch at an image, as a detached (4, B)
    tensor of Losses' fields, with the gradient backpropagated into the image's graph."""

    def value_and_backward(self, image: Tensor, items: Tensor | None = None) -> Tensor: ...


class ClampInward(torch.autograd.Function):
    """Clamp to [0, 255]; pass gradients that would move an out-of-range pixel back inside.

    A plain clamp would zero them and strand the pixel at the bound for good.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return x.clamp(0, 255)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        # Descent moves x along -grad: above 255 that is inward when grad > 0, below 0 when < 0.
        outward = ((x > 255) & (grad < 0)) | ((x < 0) & (grad > 0))
        return grad.masked_fill(outward, 0)


def rgb(image: Tensor) -> Tensor:
    """A (C, H, W) or (B, C, H, W) image with C = 1 or 3 as 3-channel RGB for VGG."""
    return image.expand(*image.shape[:-3], 3, *image.shape[-2:])


@dataclass(frozen=True)
class Phase:
    """A stretch of a run in one arithmetic: `evaluations` long, or until the stopping test."""

    objective: Evaluating
    evaluations: int | None = None


@dataclass
class PhotoRun:
    """One photo's part of a run: the best image evaluated so far and its trail."""

    image: Tensor  # the best evaluated, clamped, (1, C, H, W)
    losses: Losses | None = None
    trail: list[float] = field(default_factory=list)  # best objective after each evaluation
    phase_start: int = 0  # where in `trail` the current objective's values begin
    ready: bool = False  # done with a phase before the last (its evaluations, or stalled)
    history: list[tuple[float, float]] = field(default_factory=list)  # (seconds, best)
    seconds: float = 0.0
    done: bool = False


class BatchRun:
    """One run of the optimiser over a batch: each photo's part, the phase in force and those
    to come. The optimiser calls `evaluate`; its driver asks `done` and moves the phases on."""

    def __init__(
        self,
        phases: list[Phase],
        starts: list[Tensor],
        budget: int,
        settings: StyleSettings,
        started: float,
        callback: Callable[[Progress], None] | None,
        picture: Callable[[int, Tensor], Tensor],
        position: Position,
    ) -> None:
        """`started`: the batch's perf_counter(); `picture`: what turns a photo's image into
        its result, for the callback's preview; `position`: where this run is in a
        coarse-to-fine plan, for the progress reports."""
        self.photos = [PhotoRun(image=start) for start in starts]
        self.shape = starts[0].shape[1:]  # (C, H, W) of every photo
        self.phase, *self.later = phases
        self.budget = budget
        self.window, self.tolerance = STOPPING[settings.finish]
        self.started, self.began = started, time.perf_counter()
        self.callback, self.picture = callback, picture
        self.position = position

    @property
    def done(self) -> bool:
        """Whether every photo has left the batch."""
        return all(photo.done for photo in self.photos)

    def evaluate(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Objectives (B,) and gradients (B, n) at flat `points`; inf and 0 for photos that have
        left the batch. Keeps each photo's best, reports progress, and decides who leaves."""
        active = [item for item, photo in enumerate(self.photos) if not photo.done]
        z = points.reshape(-1, *self.shape)[active].detach().requires_grad_(True)
        items = None if len(active) == len(self.photos) else torch.tensor(active)
        columns = self.phase.objective.value_and_backward(rgb(ClampInward.apply(z)), items)
        grad = z.grad.flatten(1)
        f = torch.full((len(self.photos),), math.inf, dtype=torch.float64, device=points.device)
        f[active] = columns[0].double()  # built on the device, not from numbers copied back
        g = torch.zeros_like(points)
        g[active] = grad
        # the one wait on the device an evaluation: every term, and whether the gradient vanished
        vanished = (grad.abs().amax(1) == 0).to(columns.dtype)
        rows = torch.cat((columns, vanished[None])).T.tolist()
        now = time.perf_counter() - self.started
        for index, item in enumerate(active):
            self._record(item, z[index : index + 1], rows[index], now)
        return f, g

    def _record(self, item: int, point: Tensor, row: list[float], now: float) -> None:
        """Photo `item` evaluated at `point`: `row` is its Losses' fields and whether its
        gradient vanished. Keeps its best, reports, and decides whether it is done."""
        photo, terms = self.photos[item], Losses(*row[:4])
        if photo.losses is None or terms.total < photo.losses.total:
            photo.image, photo.losses = point.detach().clamp(0, 255), terms
        photo.trail.append(photo.losses.total)
        photo.history.append((now, photo.losses.total))
        if self.callback is not None:
            best = photo.losses.total
            self.callback(
                Progress(
                    len(photo.trail),
                    self.budget,
                    terms,
                    best if math.isfinite(best) else None,
                    item,
                    functools.partial(self.picture, item, photo.image),
                    self.position,
                    time.perf_counter() - self.began,
                )
            )
        over = self._phase_over(photo)
        last = self.phase.evaluations is None and not self.later  # a stall here ends the run
        photo.ready = over and not last
        if len(photo.trail) >= self.budget or (over and last) or row[4]:
            photo.done, photo.seconds = True, now

    def _phase_over(self, photo: PhotoRun) -> bool:
        """Whether `photo` is done with the phase in force: a fixed-length phase's evaluations,
        or an open-ended one's stopping test (settings.finish)."""
        if self.phase.evaluations is not None:
            return len(photo.trail) - photo.phase_start >= self.phase.evaluations
        return stalled_over(photo.trail[photo.phase_start :], self.window, self.tolerance)

    def next_phase_due(self) -> bool:
        """Whether the batch moves on: every photo done with this phase, or one nearly out of
        budget (a quarter left)."""
        active = [photo for photo in self.photos if not photo.done]
        late = any(self.budget - len(p.trail) <= max(1, self.budget // 4) for p in active)
        return bool(self.later) and (late or all(photo.ready for photo in active))

    def next_phase(self) -> None:
        """Move on to the next phase: each photo's best is chosen again, by its values alone."""
        self.phase = self.later.pop(0)
        for photo in self.photos:
            if not photo.done:
                photo.losses, photo.phase_start = None, len(photo.trail)


def optimize_together(
    run: BatchRun, starts: list[Tensor], optimizer: str, history: int = LBFGS_HISTORY
) -> list[PhotoRun]:
    """Minimise each photo's objective from its start within the run's budget, all photos in
    one batch, with `optimizer` (settings.optimizer); returns each one's best image evaluated
    (clamped) and its trail. L-BFGS keeps `history` pairs (fewer at sizes where the full
    history would not fit: engine.memory.fit_for).

    Line-search probes can be worse than the point they start from, hence the best image
    evaluated, not the last. A photo leaves the batch when its budget is spent, its best
    objective stalls (settings.finish) or its gradient vanishes.

    `phases` are the same objective in the arithmetic to use in turn, the last fp32: the batch
    moves on once every photo has done the phase's evaluations or stalled (or a quarter of the
    budget is left), with its L-BFGS history kept and its current point evaluated again, so no
    line search ever compares values of two precisions (bf16's are off fp32's by more than a
    late step gains: mixed, the search stalls there; the figures are in DECISIONS.md, figures
    moved out of the code), and the best image is chosen by the last phase's values alone.
    bf16 starts only after a few fp32 evaluations: the first steps are tiny, and the gradient's
    change over them is lost in bf16's rounding, which sent the first L-BFGS step far off.
    """
    x = torch.cat(starts)
    if optimizer == "adam":
        pixels = x.detach().clone().requires_grad_(True)
        adam = torch.optim.Adam([pixels], lr=10)  # neural-style's rate for 0-255 pixels
        while not run.done:
            _, g = run.evaluate(pixels.detach().flatten(1))
            pixels.grad = g.reshape(pixels.shape)
            adam.step()
        return run.photos
    flat = x.detach().flatten(1)
    lbfgs = BatchLBFGS(flat, *run.evaluate(flat), history)
    while not run.done:
        if run.next_phase_due():
            run.next_phase()
            lbfgs.reanchor(*run.evaluate(lbfgs.x))
        else:
            trial = lbfgs.propose()
            lbfgs.observe(trial, *run.evaluate(trial))
    return run.photos


def stalled_over(trail: list[float], window: int, tolerance: float) -> bool:
    """True when the best objective (`trail`, one value per evaluation) fell by less than
    `tolerance` of itself over the last `window` evaluations."""
    if len(trail) <= window:
        return False
    before, now = trail[-window - 1], trail[-1]
    return before - now < tolerance * abs(before)
