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

import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from daemon.engine import colour, stages
from daemon.engine.batch_run import (
    BF16_AFTER,
    STOPPING,
    BatchRun,
    Phase,
    PhotoRun,
    Progress,
    optimize_together,
    rgb,
)
from daemon.engine.blocks import BlockObjective, block_grams
from daemon.engine.lbfgs import LBFGS_HISTORY
from daemon.engine.objective import Losses, Objective, gram
from daemon.engine.settings import DEFAULT_EVALUATIONS, DEFAULT_PRECISION, StyleSettings
from daemon.engine.vgg import MIN_SIDE, VGGFeatures


@dataclass(frozen=True)
class Style:
    """One style image, RGB 0-255 (3, H, W), and its blending weight."""

    image: Tensor
    weight: float = 1.0


@dataclass(frozen=True)
class StageReport:
    """One scale of a result: for the sidecar and the summary line."""

    size: tuple[int, int]  # (H, W)
    evaluations: int
    budget: int
    seconds: float  # this stage's
    ended: float  # seconds since the run started, when this stage ended
    objective: float  # the best, at this stage's size
    blocks: int  # 1: the whole image at once


# What a stage of this size may use: (block px or None for the whole image, L-BFGS pairs kept);
# engine.memory.fit_for makes one from the device's memory.
Fit = Callable[[tuple[int, int]], tuple[int | None, int]]


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
    stages: list[StageReport] = field(default_factory=list, repr=False)  # coarsest first


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
        floor: int | None = None,
        block: int | None = None,
    ) -> dict[str, Tensor]:
        """style_grams_for's targets, computed once for each set of what makes them (made
        whole or in blocks, they are the same)."""
        key = _TargetsKey.of(model, settings, styles, long_side, precision, floor)
        if key not in self._by_key:
            self._by_key[key] = style_grams_for(model, settings, styles, long_side, floor, block)
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
    floor: int | None  # a finer stage's: the styles are not upsampled beyond this
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
        floor: int | None = None,
    ) -> _TargetsKey:
        """The key of the targets style_grams_for makes from these arguments."""
        return cls(
            styles=tuple((_pixels_digest(style.image), style.weight) for style in styles),
            weights=settings.weights,
            pooling=settings.pooling,
            layers=tuple(name for name, _ in settings.style_layers),
            style_scale=settings.style_scale,
            long_side=long_side,
            floor=floor,
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


def style_grams_for(
    model: VGGFeatures,
    settings: StyleSettings,
    styles: Sequence[Style],
    long_side: int,
    floor: int | None = None,
    block: int | None = None,
) -> dict[str, Tensor]:
    """Blended targets sum_i w_i A_i / M_i, each style sized to style_scale x the output's side;
    with `floor`, no larger than the painting as given (or `floor`, if that is larger): a finer
    stage's. With `block`, each painting's Grams are made in blocks (`blocks.block_grams`)."""
    side = max(MIN_SIDE, round(settings.style_scale * long_side))
    total_weight = sum(style.weight for style in styles)
    layers = tuple(name for name, _ in settings.style_layers)
    grams: dict[str, Tensor] = {}
    device = next(model.parameters()).device
    with torch.no_grad():
        for style in styles:
            h, w = style.image.shape[-2:]
            own = side if floor is None else min(side, max(floor, h, w))
            image = _pad_to_min_side(resize(style.image.to(device), fit_size(h, w, own)))
            if block is None:
                feats = model(image[None])
                made = {name: gram(feats[name]) for name in layers}
            else:
                made = block_grams(model, image[None], layers, block)
            for name in layers:
                g = made[name] * (style.weight / total_weight)
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
    fit: Fit | None = None,
) -> Result:
    """Repaint `content` (RGB 0-255, (3, H, W)) in the style of `styles`.

    The output's long side is `settings.size`, or the photo's own if smaller (never upscaled).
    `targets` caches the style Grams across calls with the same styles and settings.
    `precision` is the GPU's arithmetic for the network (settings.PRECISIONS); `fit`: see
    `stylize_batch`.
    """
    return stylize_batch(
        model,
        [content],
        styles,
        settings,
        targets=targets,
        callback=callback,
        precision=precision,
        fit=fit,
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
    fit: Fit | None = None,
) -> list[Result]:
    """`stylise` for several photos with the same `output_size`, evaluated as one batch.

    Each photo keeps its own optimiser state (history, line search, stopping), fed with its
    own objective and gradient, so its result is what `stylize` gives alone, up to
    floating-point noise; the batch shares the network's passes and the optimiser's arithmetic
    (and, in bf16, the moments it switches arithmetic: see batch_run.optimize_together).

    A large output goes coarse to fine (`stages.plan`), each stage started from the last one's
    result upsampled, with its own targets. `fit` says, per stage size, whether it runs whole
    or in blocks and how much L-BFGS history it keeps (`memory.fit_for`); None: whole, full
    history (the caller knows the device holds it).
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
    plan = stages.plan(
        size, settings.steps or DEFAULT_EVALUATIONS, single_scale=settings.single_scale
    )
    first_style_side = max(MIN_SIDE, round(settings.style_scale * max(plan[0].size)))
    job = _Job(model, settings, styles, photos, targets, callback, precision, started)
    starts: list[Tensor] | None = None
    reports: list[list[StageReport]] = [[] for _ in photos]
    for index, stage in enumerate(plan):
        # a finer stage reads each painting at no more than its own size (or the first
        # stage's): upsampling a painting adds blur, not strokes
        floor = first_style_side if index else None
        position = stages.position(plan, index)
        runs, picture, used, blocks = job.run_stage(stage, position, starts, fit, floor)
        for item, run in enumerate(runs):
            begun = reports[item][-1].ended if reports[item] else 0.0
            reports[item].append(
                StageReport(
                    size=stage.size,
                    evaluations=len(run.trail),
                    budget=stage.budget,
                    seconds=run.seconds - begun,
                    ended=run.seconds,
                    objective=run.losses.total,
                    blocks=blocks,
                )
            )
        if index + 1 < len(plan):
            following = plan[index + 1].size
            starts = [_upsampled(run.image, stage.size, following) for run in runs]
    results = []
    for item, run in enumerate(runs):
        results.append(
            Result(
                image=picture(item, run.image),
                losses=run.losses,
                evaluations=sum(report.evaluations for report in reports[item]),
                budget=sum(stage.budget for stage in plan),
                seconds=run.seconds,
                device=str(device),
                history=[point for r in job.histories[item] for point in r],
                precision=used,
                stages=reports[item],
            )
        )
    return results


def _upsampled(image: Tensor, size: tuple[int, int], following: tuple[int, int]) -> Tensor:
    """A stage's best image (1, C, H, W), its padding cut off, resized to the next stage's size."""
    cropped = image[0, :, : size[0], : size[1]]
    return _pad_to_min_side(resize(cropped, following))[None]


class _Job:
    """What every stage of one `stylize_batch` shares: the network, the photos and paintings at
    their own sizes, the cache of targets, the callback; `run_stage` runs one scale."""

    def __init__(
        self,
        model: VGGFeatures,
        settings: StyleSettings,
        styles: list[Style],
        photos: list[Tensor],
        targets: StyleTargets | None,
        callback: Callable[[Progress], None] | None,
        precision: str,
        started: float,
    ) -> None:
        self.model, self.settings, self.styles, self.photos = model, settings, styles, photos
        self.targets, self.callback, self.precision = targets, callback, precision
        self.started = started
        self.histories: list[list[list[tuple[float, float]]]] = [[] for _ in photos]

    def run_stage(
        self,
        stage: stages.Stage,
        position: stages.Position,
        starts: list[Tensor] | None,
        fit: Fit | None,
        style_floor: int | None,
    ) -> tuple[list[PhotoRun], Callable[[int, Tensor], Tensor], str, int]:
        """One scale to its stopping rule: each photo's run, the picture maker, the arithmetic
        used and the number of blocks (1: whole). `position`: for the progress reports."""
        settings, photos, model = self.settings, self.photos, self.model
        size, budget = stage.size, stage.budget
        device = photos[0].device
        long_side = max(size)
        window, _ = STOPPING[settings.finish]
        block, history = fit(size) if fit is not None else (None, LBFGS_HISTORY)
        scaled = [_pad_to_min_side(resize(photo, size)) for photo in photos]
        if settings.colour == "luminance":
            # (1, H, W): optimised as one channel
            scaled = [colour.luminance(photo) for photo in scaled]
        with _precision(device, self.precision) as bf16:
            grams = [
                _style_grams(
                    model,
                    settings,
                    self.styles,
                    p,
                    long_side,
                    self.targets,
                    self.precision,
                    style_floor,
                    block,
                )
                for p in photos
            ]
            batch_grams = {name: torch.cat([g[name] for g in grams]) for name in grams[0]}
            content = rgb(torch.stack(scaled))

            def objective(low: bool = False) -> Objective | BlockObjective:
                if block is None:
                    return Objective(model, settings, content, batch_grams, bf16=low)
                return BlockObjective(model, settings, content, batch_grams, block=block, bf16=low)

            fp32 = objective()
            phases = [Phase(fp32)]
            # see optimize_together; a budget too small for three phases stays in fp32
            if bf16 and settings.optimizer == "lbfgs" and budget > BF16_AFTER + 2 * window:
                phases = [Phase(fp32, BF16_AFTER), Phase(objective(low=True)), Phase(fp32)]

            def picture(item: int, image: Tensor) -> Tensor:
                """The optimised `image` of photo `item` as its result: cropped, coloured, RGB."""
                out = image[0, :, : size[0], : size[1]].detach()  # without the padding
                if settings.colour == "luminance":
                    out = colour.with_chroma_of(out, resize(photos[item], size)).clamp(0, 255)
                return out.expand(3, -1, -1).cpu().clone()

            if starts is None:
                starts = [_initial_image(photo, settings) for photo in scaled]
            run = BatchRun(
                phases, starts, budget, settings, self.started, self.callback, picture, position
            )
            runs = optimize_together(run, starts, settings.optimizer, history)
        for item, photo_run in enumerate(runs):
            self.histories[item].append(photo_run.history)
        used = "bf16" if len(phases) > 1 else "fp32" if self.precision == "bf16" else self.precision
        blocks = 1 if block is None else fp32.blocks  # type: ignore[union-attr]
        return runs, picture, used, blocks


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
    floor: int | None,
    block: int | None,
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

    rgb_styles = _as_rgb_styles(styles)
    if targets is not None and settings.colour == "style":
        return targets.grams(model, settings, rgb_styles, long_side, precision, floor, block)
    return style_grams_for(model, settings, rgb_styles, long_side, floor, block)


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


def _as_rgb_styles(styles: Sequence[Style]) -> list[Style]:
    return [Style(rgb(s.image), s.weight) for s in styles]


def _initial_image(photo: Tensor, settings: StyleSettings) -> Tensor:
    """The photo itself (the paper's faster start), or seeded noise around mid-grey."""
    if settings.init == "content":
        return photo[None].clone()
    generator = torch.Generator().manual_seed(settings.seed)
    noise = torch.randn(photo.shape, generator=generator) * 32 + 128
    return noise.to(photo.device)[None].clamp(0, 255)
