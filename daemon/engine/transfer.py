"""Neural style transfer as in Gatys, Ecker & Bethge, "Image Style Transfer Using Convolutional
Neural Networks" (CVPR 2016). Tensors in, tensor out: no files, no prints.

Symbols as in the paper, for one layer l: F (the output image's features) and P (the photo's),
each N_l channels by M_l positions; G = F F^T and A (the style image's Gram), each divided by its
own number of positions so that a preset looks the same at any output size:

    L_content = 1/2 * (4096 / M) * sum (F - P)^2        (4096 = relu4_2 positions at 512 px)
    E_l       = 1 / (4 N_l^2) * sum (G_l / M_l - A_l / M_l^s)^2
    L_style   = sum_l w_l E_l
    L_total   = alpha L_content + beta L_style + tv_weight L_tv

The pixels are optimised directly (L-BFGS, daemon.engine.lbfgs, by default) in RGB 0-255. Every
evaluation sees the image clamped to that range, with gradients let through where they point back
into it, so the objective minimised is the objective of the image we save; clamping only at the
end did worse (DECISIONS.md, clamp at every evaluation).
"""

from __future__ import annotations

import functools
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
from daemon.engine.settings import DEFAULT_EVALUATIONS, DEFAULT_PRECISION, StyleSettings
from daemon.engine.vgg import MIN_SIDE, VGGFeatures

CONTENT_REFERENCE_POSITIONS = 4096  # relu4_2 positions of a 512 x 512 image: the paper's scale
# One scale, at the output size: coarse-to-fine (Gatys et al., CVPR 2017) was slower and worse on
# a CPU and on an H200, since upsampling blurs away what relu1_1..relu3_1 measure (DECISIONS.md,
# one scale).
# Per `finish`: (window, tolerance) of the stopping test, which ends a run once its best
# objective fell by less than `tolerance` (relative) over the last `window` evaluations
# (DECISIONS.md, stopping rule). `steps` (or DEFAULT_EVALUATIONS) bounds every run.
BF16_AFTER = 10  # fp32 evaluations before a bf16 phase (see _optimise_together)
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
class Losses:
    """The objective's terms, already weighted, as plain floats."""

    total: float
    content: float
    style: float
    tv: float


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
    """Blended, normalised Gram targets per output size, kept for reuse across photos."""

    def __init__(self) -> None:
        self._by_key: dict[tuple, dict[str, Tensor]] = {}

    def get(self, key: tuple, compute: Callable[[], dict[str, Tensor]]) -> dict[str, Tensor]:
        """The cached targets for `key`, computed once."""
        if key not in self._by_key:
            self._by_key[key] = compute()
        return self._by_key[key]


def gram(features: Tensor) -> Tensor:
    """(B, N, H, W) -> (B, N, N) Gram matrix divided by its M = H * W positions, in fp32."""
    b, n, h, w = features.shape
    return _normalised_gram(features.reshape(b, n, h * w).float())


def _normalised_gram(flat: Tensor) -> Tensor:
    """(B, N, M) -> F F^T / M, made exactly symmetric: some CPUs' blocked products round the two
    triangles differently, and the style loss's written-out gradient holds only for symmetric
    G and A. On a CPU whose product is symmetric already, (G + G^T) / 2 is G bit for bit."""
    g = flat @ flat.transpose(1, 2) / flat.shape[2]
    return (g + g.transpose(1, 2)) / 2


def content_loss(features: Tensor, target: Tensor) -> Tensor:
    """1/2 (4096 / M) sum (F - P)^2, per batch item."""
    positions = features.shape[2] * features.shape[3]
    squared = (features.float() - target.float()).pow(2).flatten(1).sum(1)
    return 0.5 * (CONTENT_REFERENCE_POSITIONS / positions) * squared


def style_layer_loss(features: Tensor, target_gram: Tensor) -> Tensor:
    """E_l = 1/(4 N^2) sum (G/M - A/M_s)^2, per batch item; `target_gram` is already A/M_s."""
    return _StyleLayerLoss.apply(features, target_gram)


class _StyleLayerLoss(torch.autograd.Function):
    """E_l with its gradient written out: dE/dF = (G/M - A) F / (N^2 M), one product, which
    holds because A, a Gram, is symmetric like G.

    Left to autograd, the Gram's backward is two products plus the add of a transposed copy
    (G is symmetric, autograd does not know it) and the loss's a few elementwise passes over
    N x N; at relu1_1 of a 512 px photo F alone is 64 x 262144.
    """

    @staticmethod
    def forward(ctx, features: Tensor, target_gram: Tensor) -> Tensor:  # type: ignore[override]
        b, n, h, w = features.shape
        dtype = torch.promote_types(features.dtype, torch.float32)  # bf16 features: fp32 Grams
        flat = features.reshape(b, n, h * w).to(dtype)
        # G/M as the targets were made (not one baddbmm): a photo that is its own painting
        # then has a difference of exactly 0, and its run ends at once
        diff = _normalised_gram(flat) - target_gram.to(dtype)
        ctx.save_for_backward(flat, diff)
        ctx.features_shape, ctx.features_dtype = features.shape, features.dtype
        return diff.pow(2).sum((1, 2)) / (4 * n**2)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        flat, diff = ctx.saved_tensors
        _, n, m = flat.shape
        # the scale goes on the N x N factor, not on the N x M product
        scaled = diff * (grad / (n**2 * m)).to(diff.dtype)[:, None, None]
        grad_features = torch.bmm(scaled, flat).reshape(ctx.features_shape)
        return grad_features.to(ctx.features_dtype), None


def tv_loss(image: Tensor) -> Tensor:
    """Mean squared difference between neighbouring pixels, per batch item (size-independent)."""
    dx = (image[..., :, 1:] - image[..., :, :-1]).pow(2).flatten(1).mean(1)
    dy = (image[..., 1:, :] - image[..., :-1, :]).pow(2).flatten(1).mean(1)
    return dx + dy


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


class Objective:
    """The paper's objective for a batch of photos of one size, with their targets precomputed.

    Photos in a batch share nothing but the network: each item's terms depend only on its own
    image and targets, so the gradient of the summed objective is each photo's own gradient.
    """

    def __init__(
        self,
        model: VGGFeatures,
        settings: StyleSettings,
        content: Tensor,
        style_grams: dict[str, Tensor],
        *,
        bf16: bool = False,
    ) -> None:
        """`content`: (3, H, W) or (B, 3, H, W); `style_grams`: (1 or B, N, N) per layer;
        `bf16`: the network's passes in bf16 (the losses stay fp32), the content targets too,
        so that the content term compares like with like."""
        self.model = model
        self.settings = settings
        self.bf16 = bf16
        with torch.no_grad():
            feats = self._features(content if content.dim() == 4 else content[None])
        self.content_targets = {name: feats[name] for name in settings.content_layers}
        self.style_grams = style_grams

    def __call__(self, image: Tensor) -> tuple[Tensor, Losses]:
        """Objective of a (B, 3, H, W) batch, all items: the scalar to minimise and its terms."""
        loss, terms = self.per_item(image)
        return loss, Losses(*terms.sum(1).tolist())

    def per_item(self, image: Tensor, items: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The summed objective of a batch of the photos at `items` (all when None), and each
        item's terms as a detached (4, B) tensor of Losses' fields, left on the device: the
        caller copies them back once, with whatever else it needs."""
        s = self.settings

        def target(t: Tensor) -> Tensor:
            return t if items is None or t.shape[0] == 1 else t[items.to(t.device)]

        feats = self._features(image)
        content = sum(content_loss(feats[n], target(t)) for n, t in self.content_targets.items())
        style = sum(
            w * style_layer_loss(feats[n], target(self.style_grams[n])) for n, w in s.style_layers
        )
        tv = tv_loss(image) if s.tv_weight else torch.zeros(image.shape[0], device=image.device)
        weighted = (s.alpha * content, s.beta * style, s.tv_weight * tv)
        total = sum(weighted)
        columns = torch.stack([t.detach().expand(image.shape[0]) for t in (total, *weighted)])
        return total.sum(), columns

    def _features(self, image: Tensor) -> dict[str, Tensor]:
        return self.model(image, bf16=self.bf16)


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


def stylise(
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
    return stylise_batch(
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


def stylise_batch(
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
    own objective and gradient, so its result is what `stylise` gives alone, up to
    floating-point noise; the batch shares the network's passes and the optimiser's arithmetic
    (and, in bf16, the moments it switches arithmetic: see _optimise_together).
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
        grams = [_style_grams(model, settings, styles, p, long_side, targets) for p in photos]
        batch_grams = {name: torch.cat([g[name] for g in grams]) for name in grams[0]}
        content = _rgb(torch.stack(scaled))
        fp32 = Objective(model, settings, content, batch_grams)
        phases = [_Phase(fp32)]
        # see _optimise_together; a budget too small for three phases stays in fp32
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
        runs = _optimise_together(phases, starts, budget, settings, started, callback, picture)
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

    def compute() -> dict[str, Tensor]:
        return style_grams_for(model, settings, _as_rgb_styles(styles), long_side)

    if targets is not None and settings.colour == "style":
        return targets.get((long_side,), compute)
    return compute()


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
class _Run:
    """One photo's optimisation: the best image evaluated so far and its trail."""

    image: Tensor  # the best evaluated, clamped, (1, C, H, W)
    losses: Losses | None = None
    trail: list[float] = field(default_factory=list)  # best objective after each evaluation
    phase_start: int = 0  # where in `trail` the current objective's values begin
    ready: bool = False  # done with a phase before the last (its evaluations, or stalled)
    history: list[tuple[float, float]] = field(default_factory=list)  # (seconds, best)
    seconds: float = 0.0
    done: bool = False


def _optimise_together(
    phases: list[_Phase],
    starts: list[Tensor],
    budget: int,
    settings: StyleSettings,
    started: float,
    callback: Callable[[Progress], None] | None,
    picture: Callable[[int, Tensor], Tensor],
) -> list[_Run]:
    """Minimise each photo's objective from its start for at most `budget` evaluations, all
    photos in one batch; returns each one's best image evaluated (clamped) and its trail.

    Line-search probes can be worse than the point they start from, hence the best image
    evaluated, not the last. A photo leaves the batch when its budget is spent, its best
    objective stalls (settings.finish) or its gradient vanishes.

    `phases` are the same objective in the arithmetic to use in turn, the last fp32: the batch
    moves on once every photo has done the phase's evaluations or stalled (or a quarter of the
    budget is left), with its L-BFGS history kept and its current point evaluated again, so no
    line search ever compares values of two precisions (bf16's are ~0.3 % high: mixed, the
    search stalls there), and the best image is chosen by the last phase's values alone. bf16
    starts only after a few fp32 evaluations: the first steps are tiny, and the gradient's
    change over them is lost in bf16's rounding, which sent the first L-BFGS step far off.
    """
    window, tolerance = STOPPING[settings.finish]
    runs = [_Run(image=start) for start in starts]
    x = torch.cat(starts)
    shape = x.shape[1:]
    phases = list(phases)
    phase = phases.pop(0)

    def evaluate(points: Tensor) -> tuple[Tensor, Tensor]:
        """Objectives (B,) and gradients (B, n) at flat `points`; inf and 0 for photos that have
        left the batch. Keeps each photo's best, reports progress, and decides who leaves."""
        active = [item for item, run in enumerate(runs) if not run.done]
        z = points.reshape(-1, *shape)[active].detach().requires_grad_(True)
        items = None if len(active) == len(runs) else torch.tensor(active)
        loss, columns = phase.objective.per_item(_rgb(_ClampInward.apply(z)), items)
        loss.backward()
        grad = z.grad.flatten(1)
        f = torch.full((len(runs),), math.inf, dtype=torch.float64, device=points.device)
        f[active] = columns[0].double()  # built on the device, not from numbers copied back
        g = torch.zeros_like(points)
        g[active] = grad
        # the one wait on the device an evaluation: every term, and whether the gradient vanished
        vanished = (grad.abs().amax(1) == 0).to(columns.dtype)
        rows = torch.cat((columns, vanished[None])).T.tolist()
        now = time.perf_counter() - started
        for index, item in enumerate(active):
            run, terms = runs[item], Losses(*rows[index][:4])
            if run.losses is None or terms.total < run.losses.total:
                run.image, run.losses = z[index : index + 1].detach().clamp(0, 255), terms
            run.trail.append(run.losses.total)
            run.history.append((now, run.losses.total))
            if callback is not None:
                best = functools.partial(picture, item, run.image)
                callback(Progress(len(run.trail), budget, terms, item, best))
            stalled = stalled_over(run.trail[run.phase_start :], window, tolerance)
            if phase.evaluations is None:
                run.ready = stalled and bool(phases)
            else:  # a fixed-length phase: it never ends the run
                run.ready, stalled = len(run.trail) - run.phase_start >= phase.evaluations, False
            if len(run.trail) >= budget or (stalled and not phases) or rows[index][4]:
                run.done, run.seconds = True, now
        return f, g

    def next_phase_due() -> bool:
        active = [run for run in runs if not run.done]
        late = any(budget - len(run.trail) <= max(1, budget // 4) for run in active)
        return bool(phases) and (late or all(run.ready for run in active))

    if settings.optimizer == "adam":
        pixels = x.detach().clone().requires_grad_(True)
        adam = torch.optim.Adam([pixels], lr=10)  # neural-style's rate for 0-255 pixels
        while not all(run.done for run in runs):
            _, g = evaluate(pixels.detach().flatten(1))
            pixels.grad = g.reshape(pixels.shape)
            adam.step()
        return runs
    flat = x.detach().flatten(1)
    f, g = evaluate(flat)
    optimizer = BatchLBFGS(flat, f, g, LBFGS_HISTORY)
    while not all(run.done for run in runs):
        if next_phase_due():
            phase = phases.pop(0)
            for run in runs:
                if not run.done:
                    run.losses, run.phase_start = None, len(run.trail)
            f, g = evaluate(optimizer.x)
            optimizer.reanchor(f, g)
            continue
        trial = optimizer.propose()
        f, g = evaluate(trial)
        optimizer.observe(trial, f, g)
    return runs


def stalled_over(trail: list[float], window: int, tolerance: float) -> bool:
    """True when the best objective (`trail`, one value per evaluation) fell by less than
    `tolerance` of itself over the last `window` evaluations."""
    if len(trail) <= window:
        return False
    before, now = trail[-window - 1], trail[-1]
    return before - now < tolerance * abs(before)
