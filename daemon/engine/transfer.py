"""Neural style transfer as in Gatys, Ecker & Bethge, "Image Style Transfer Using Convolutional
Neural Networks" (CVPR 2016). Tensors in, tensor out: no files, no prints.

The objective, its symbols and its terms are in daemon.engine.objective; here the photos are
sized, the style targets made (and kept), and the objective minimised.

The pixels are optimised directly (L-BFGS, daemon.engine.lbfgs, by default) in RGB 0-255. Every
evaluation sees the image clamped to that range, with gradients let through where they point back
into it, so the objective minimised is the objective of the image we save; clamping only at the
end did worse (DECISIONS.md, clamp at every evaluation).
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from daemon.engine import colour
from daemon.engine.lbfgs import LBFGS_HISTORY, BatchLBFGS
from daemon.engine.objective import Losses, Objective, gram
from daemon.engine.settings import DEFAULT_EVALUATIONS, DEFAULT_PRECISION, StyleSettings
from daemon.engine.vgg import MIN_SIDE, VGGFeatures

# One scale, at the output size, not coarse-to-fine (Gatys et al., CVPR 2017): upsampling blurs
# away what relu1_1..relu3_1 measure. What each was measured to cost is in DECISIONS.md (one
# scale): figures kept in a comment go stale as the code changes.
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
class Style:
    """One style image, RGB 0-255 (3, H, W), and its blending weight."""

    image: Tensor
    weight: float = 1.0


@dataclass(frozen=True)
class Progress:
    """Reported to the caller's callback after every objective evaluation."""

    evaluation: int
    budget: int  # at most this many evaluations
    losses: Losses
    item: int  # which photo of the batch
    # The best image so far as it would be the result, (3, H, W) RGB 0-255 on the CPU; a copy
    # from the device, so for a seldom preview, not for every report.
    picture: Callable[[], Tensor] = field(repr=False, compare=False)


@dataclass(frozen=True)
class Result:
    """The stylised image, RGB 0-255 (3, H, W) float on the CPU, and how it was made."""

    image: Tensor
    losses: Losses
    evaluations: int  # used, out of `budget` (fewer when the objective stalled)
    budget: int
    seconds: float
    device: str
    history: list[tuple[float, float]] = field(repr=False)  # (seconds, best objective) per eval
    precision: str = DEFAULT_PRECISION  # the network's arithmetic (bf16: fp32 to finish)


class StyleTargets:
    """Blended, normalised Gram targets, kept for reuse across photos and batches.

    Keyed by all that makes them (_TargetsKey), not by the output size alone: one instance can
    serve several presets, sizes, devices and precisions without handing one another's targets.
    """

    def __init__(self) -> None:
        self._by_key: dict[_TargetsKey, dict[str, Tensor]] = {}

    def grams(
        self,
        model: VGGFeatures,
        settings: StyleSettings,
        styles: Sequence[Style],
        long_side: int,
        precision: str,
    ) -> dict[str, Tensor]:
        """style_grams_for's targets, computed once for each set of what makes them."""
        key = _TargetsKey.of(model, settings, styles, long_side, precision)
        if key not in self._by_key:
            self._by_key[key] = style_grams_for(model, settings, styles, long_side)
        return self._by_key[key]


@dataclass(frozen=True)
class _TargetsKey:
    """Everything style_grams_for's result depends on besides the network's weights, which
    `weights` and `pooling` name (Models builds one network per pair)."""

    styles: tuple[tuple[str, float], ...]  # each style's pixel digest and weight
    weights: str
    pooling: str
    layers: tuple[str, ...]  # the style layers read
    style_scale: float
    long_side: int  # of the output; the styles are sized from it
    device: str
    precision: str  # on a GPU it sets the convolutions' TF32 (_precision)

    @classmethod
    def of(
        cls,
        model: VGGFeatures,
        settings: StyleSettings,
        styles: Sequence[Style],
        long_side: int,
        precision: str,
    ) -> _TargetsKey:
        """The key of the targets style_grams_for makes from these arguments."""
        return cls(
            styles=tuple((_pixels_digest(style.image), style.weight) for style in styles),
            weights=settings.weights,
            pooling=settings.pooling,
            layers=tuple(name for name, _ in settings.style_layers),
            style_scale=settings.style_scale,
            long_side=long_side,
            device=str(next(model.parameters()).device),
            precision=precision,
        )


def _pixels_digest(image: Tensor) -> str:
    """A style image by its content, shape and dtype: the same painting gives the same targets
    whichever tensor holds it, and a tensor changed in place is a new painting."""
    pixels = image.detach().contiguous().cpu()
    digest = hashlib.blake2b(repr((tuple(pixels.shape), pixels.dtype)).encode(), digest_size=16)
    digest.update(pixels.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def fit_size(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(H, W) scaled so the long side is `long_side`, aspect kept, each side >= 1."""
    scale = long_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize(image: Tensor, size: tuple[int, int]) -> Tensor:
    """Antialiased bicubic resize of a (C, H, W) image, clamped to 0-255."""
    if tuple(image.shape[-2:]) == size:
        return image
    out = F.interpolate(image[None], size=size, mode="bicubic", antialias=True, align_corners=False)
    return out[0].clamp(0, 255)


def layers_needed(settings: StyleSettings) -> tuple[str, ...]:
    """Every VGG layer the objective reads."""
    return (*settings.content_layers, *(name for name, _ in settings.style_layers))


class _ClampInward(torch.autograd.Function):
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


def style_grams_for(
    model: VGGFeatures, settings: StyleSettings, styles: Sequence[Style], long_side: int
) -> dict[str, Tensor]:
    """Blended targets sum_i w_i A_i / M_i, each style sized to style_scale x the output's side."""
    side = max(MIN_SIDE, round(settings.style_scale * long_side))
    total_weight = sum(style.weight for style in styles)
    grams: dict[str, Tensor] = {}
    device = next(model.parameters()).device
    with torch.no_grad():
        for style in styles:
            h, w = style.image.shape[-2:]
            image = _pad_to_min_side(resize(style.image.to(device), fit_size(h, w, side)))
            feats = model(image[None])
            for name, _ in settings.style_layers:
                g = gram(feats[name]) * (style.weight / total_weight)
                grams[name] = grams[name] + g if name in grams else g
    return grams


def stylize(
    model: VGGFeatures,
    content: Tensor,
    styles: Sequence[Style],
    settings: StyleSettings,
    *,
    targets: StyleTargets | None = None,
    callback: Callable[[Progress], None] | None = None,
    precision: str = DEFAULT_PRECISION,
) -> Result:
    """Repaint `content` (RGB 0-255, (3, H, W)) in the style of `styles`.

    The output's long side is `settings.size`, or the photo's own if smaller (never upscaled).
    `targets` caches the style Grams across calls with the same styles and settings.
    `precision` is the GPU's arithmetic for the network (settings.PRECISIONS).
    """
    return stylize_batch(
        model,
        [content],
        styles,
        settings,
        targets=targets,
        callback=callback,
        precision=precision,
    )[0]


def output_size(height: int, width: int, settings: StyleSettings) -> tuple[int, int]:
    """(H, W) of the result for a photo of this size: photos of one preset can share a batch
    when this is the same."""
    return fit_size(height, width, min(settings.size, max(height, width)))


def stylize_batch(
    model: VGGFeatures,
    contents: Sequence[Tensor],
    styles: Sequence[Style],
    settings: StyleSettings,
    *,
    targets: StyleTargets | None = None,
    callback: Callable[[Progress], None] | None = None,
    precision: str = DEFAULT_PRECISION,
) -> list[Result]:
    """`stylise` for several photos with the same `output_size`, evaluated as one batch.

    Each photo keeps its own optimiser state (history, line search, stopping), fed with its
    own objective and gradient, so its result is what `stylize` gives alone, up to
    floating-point noise; the batch shares the network's passes and the optimiser's arithmetic
    (and, in bf16, the moments it switches arithmetic: see _optimize_together).
    """
    if not styles:
        raise ValueError("at least one style image is needed")
    started = time.perf_counter()
    device = next(model.parameters()).device
    torch.manual_seed(settings.seed)
    styles = [Style(s.image.to(device=device, dtype=torch.float32), s.weight) for s in styles]
    photos = [c.to(device=device, dtype=torch.float32) for c in contents]
    sizes = {output_size(*photo.shape[-2:], settings) for photo in photos}
    if len(sizes) != 1:
        raise ValueError(f"photos of one batch must have one output size, not {sorted(sizes)}")
    (size,) = sizes
    long_side = max(size)
    budget = settings.steps or DEFAULT_EVALUATIONS
    window, _ = STOPPING[settings.finish]
    scaled = [_pad_to_min_side(resize(photo, size)) for photo in photos]
    if settings.colour == "luminance":
        # (1, H, W): optimised as one channel
        scaled = [colour.luminance(photo) for photo in scaled]
    with _precision(device, precision) as bf16:
        grams = [
            _style_grams(model, settings, styles, p, long_side, targets, precision) for p in photos
        ]
        batch_grams = {name: torch.cat([g[name] for g in grams]) for name in grams[0]}
        content = _rgb(torch.stack(scaled))
        fp32 = Objective(model, settings, content, batch_grams)
        phases = [_Phase(fp32)]
        # see _optimize_together; a budget too small for three phases stays in fp32
        if bf16 and settings.optimizer == "lbfgs" and budget > BF16_AFTER + 2 * window:
            low = Objective(model, settings, content, batch_grams, bf16=True)
            phases = [_Phase(fp32, BF16_AFTER), _Phase(low), _Phase(fp32)]

        def picture(item: int, image: Tensor) -> Tensor:
            """The optimised `image` of photo `item` as its result: cropped, coloured, RGB."""
            out = image[0, :, : size[0], : size[1]].detach()  # without the padding
            if settings.colour == "luminance":
                out = colour.with_chroma_of(out, resize(photos[item], size)).clamp(0, 255)
            return out.expand(3, -1, -1).cpu().clone()

        starts = [_initial_image(photo, settings) for photo in scaled]
        run = _BatchRun(phases, starts, budget, settings, started, callback, picture)
        runs = _optimize_together(run, starts, settings.optimizer)
    used = "bf16" if len(phases) > 1 else "fp32" if precision == "bf16" else precision

    results = []
    for item, run in enumerate(runs):
        results.append(
            Result(
                image=picture(item, run.image),
                losses=run.losses,
                evaluations=len(run.trail),
                budget=budget,
                seconds=run.seconds,
                device=str(device),
                history=run.history,
                precision=used,
            )
        )
    return results


@contextmanager
def _precision(device: torch.device, precision: str) -> Iterator[bool]:
    """Set the arithmetic for one run (True: the network's passes in bf16 first); Gram
    products stay fp32.

    TF32 convolutions are PyTorch's own default; saying so here keeps a run's arithmetic a
    decision of ours, not of whatever ran before it in the process.
    """
    if device.type != "cuda":
        yield precision == "bf16"
        return
    backends = torch.backends
    saved = backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32
    backends.cudnn.allow_tf32 = precision == "tf32"
    backends.cuda.matmul.allow_tf32 = False
    try:
        yield precision == "bf16"
    finally:
        backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32 = saved


def _style_grams(
    model: VGGFeatures,
    settings: StyleSettings,
    styles: list[Style],
    photo: Tensor,
    long_side: int,
    targets: StyleTargets | None,
    precision: str,
) -> dict[str, Tensor]:
    """The style targets for one photo: shared by every photo (and cached) unless the colour
    mode matches the paintings to this photo first."""
    if settings.colour == "luminance":
        photo_y = colour.luminance(photo)
        styles = [
            Style(colour.match_luminance(colour.luminance(s.image), photo_y), s.weight)
            for s in styles
        ]
    elif settings.colour == "histogram":
        styles = [Style(colour.match_histogram(s.image, photo), s.weight) for s in styles]

    if targets is not None and settings.colour == "style":
        return targets.grams(model, settings, _as_rgb_styles(styles), long_side, precision)
    return style_grams_for(model, settings, _as_rgb_styles(styles), long_side)


def _pad_to_min_side(image: Tensor) -> Tensor:
    """Pad a (C, H, W) image at the bottom and right, repeating its edge, to MIN_SIDE.

    relu5_1 lies behind four 2x poolings: a side under 16 px (a 1 x 1 photo, a 40:1 panorama at
    the preset's size) would vanish there. The padding is cropped off the result.
    """
    h, w = image.shape[-2:]
    pad_h, pad_w = max(0, MIN_SIDE - h), max(0, MIN_SIDE - w)
    if not (pad_h or pad_w):
        return image
    return F.pad(image[None], (0, pad_w, 0, pad_h), mode="replicate")[0]


def _rgb(image: Tensor) -> Tensor:
    """A (C, H, W) or (B, C, H, W) image with C = 1 or 3 as 3-channel RGB for VGG."""
    return image.expand(*image.shape[:-3], 3, *image.shape[-2:])


def _as_rgb_styles(styles: Sequence[Style]) -> list[Style]:
    return [Style(_rgb(s.image), s.weight) for s in styles]


def _initial_image(photo: Tensor, settings: StyleSettings) -> Tensor:
    """The photo itself (the paper's faster start), or seeded noise around mid-grey."""
    if settings.init == "content":
        return photo[None].clone()
    generator = torch.Generator().manual_seed(settings.seed)
    noise = torch.randn(photo.shape, generator=generator) * 32 + 128
    return noise.to(photo.device)[None].clamp(0, 255)


@dataclass(frozen=True)
class _Phase:
    """A stretch of a run in one arithmetic: `evaluations` long, or until the stopping test."""

    objective: Objective
    evaluations: int | None = None


@dataclass
class _PhotoRun:
    """One photo's part of a run: the best image evaluated so far and its trail."""

    image: Tensor  # the best evaluated, clamped, (1, C, H, W)
    losses: Losses | None = None
    trail: list[float] = field(default_factory=list)  # best objective after each evaluation
    phase_start: int = 0  # where in `trail` the current objective's values begin
    ready: bool = False  # done with a phase before the last (its evaluations, or stalled)
    history: list[tuple[float, float]] = field(default_factory=list)  # (seconds, best)
    seconds: float = 0.0
    done: bool = False


class _BatchRun:
    """One run of the optimiser over a batch: each photo's part, the phase in force and those
    to come. The optimiser calls `evaluate`; its driver asks `done` and moves the phases on."""

    def __init__(
        self,
        phases: list[_Phase],
        starts: list[Tensor],
        budget: int,
        settings: StyleSettings,
        started: float,
        callback: Callable[[Progress], None] | None,
        picture: Callable[[int, Tensor], Tensor],
    ) -> None:
        """`started`: the batch's perf_counter(); `picture`: what turns a photo's image into
        its result, for the callback's preview."""
        self.photos = [_PhotoRun(image=start) for start in starts]
        self.shape = starts[0].shape[1:]  # (C, H, W) of every photo
        self.phase, *self.later = phases
        self.budget = budget
        self.window, self.tolerance = STOPPING[settings.finish]
        self.started = started
        self.callback, self.picture = callback, picture

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
        loss, columns = self.phase.objective.per_item(_rgb(_ClampInward.apply(z)), items)
        loss.backward()
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
            best = functools.partial(self.picture, item, photo.image)
            self.callback(Progress(len(photo.trail), self.budget, terms, item, best))
        over = self._phase_over(photo)
        last = self.phase.evaluations is None and not self.later  # a stall here ends the run
        photo.ready = over and not last
        if len(photo.trail) >= self.budget or (over and last) or row[4]:
            photo.done, photo.seconds = True, now

    def _phase_over(self, photo: _PhotoRun) -> bool:
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


def _optimize_together(run: _BatchRun, starts: list[Tensor], optimizer: str) -> list[_PhotoRun]:
    """Minimise each photo's objective from its start within the run's budget, all photos in
    one batch, with `optimizer` (settings.optimizer); returns each one's best image evaluated
    (clamped) and its trail.

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
    lbfgs = BatchLBFGS(flat, *run.evaluate(flat), LBFGS_HISTORY)
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
