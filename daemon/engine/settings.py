"""What one stylisation is asked to do: the engine's parameters, with their defaults.

Kept free of torch so that `stylebox check` and the config parser stay light; the engine, the
config parser and the CLI all take their defaults from `StyleSettings`.
"""

from dataclasses import dataclass
from typing import Literal, get_args

# Layers of Gatys et al. (2016), named as in the paper whatever the weight source.
PAPER_CONTENT_LAYERS: tuple[str, ...] = ("relu4_2",)
PAPER_STYLE_LAYERS: tuple[tuple[str, float], ...] = tuple(
    (name, 1 / 5) for name in ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
)

ColourMode = Literal["style", "luminance", "histogram"]
OptimizerName = Literal["lbfgs", "adam"]
Pooling = Literal["avg", "max"]
InitMode = Literal["content", "noise"]
# `size: full`: the photo's own size (outputs are never larger than their photo); any number
# above the largest photo the pixel limit lets in says that.
FULL_SIZE = 1 << 16
DEFAULT_EVALUATIONS = 300  # a run's upper bound when a preset sets no `steps`
# How finished a run is before it stops: the stopping rule of each is in engine.transfer.
Finish = Literal["draft", "standard", "fine"]

COLOUR_MODES: tuple[str, ...] = get_args(ColourMode)  # for the CLI's choices
FINISHES: tuple[str, ...] = get_args(Finish)
# Arithmetic of the network's passes; Grams and losses are always fp32 (fp16 or bf16 Grams
# overflow or lose the style); "tf32" is fp32 on the CPU; "bf16" ends each run in fp32. fp32 is
# the engine's default; the daemon and the CLI ask for "auto" (engine.device.resolve_precision:
# bf16 only where the CPU has bf16 units; DECISIONS.md, precision).
Precision = Literal["fp32", "tf32", "bf16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
DEFAULT_PRECISION = "fp32"


@dataclass(frozen=True)
class StyleSettings:
    """Engine parameters of one preset; alpha/beta have the paper's meaning (alpha/beta ~ 1e-3)."""

    alpha: float = 1.0
    beta: float = 1000.0
    content_layers: tuple[str, ...] = PAPER_CONTENT_LAYERS
    style_layers: tuple[tuple[str, float], ...] = PAPER_STYLE_LAYERS
    size: int = 512  # long side of the output in px; the aspect ratio is kept
    style_scale: float = 1.0  # style image's long side relative to the output's
    colour: ColourMode = "style"
    tv_weight: float = 0.0
    optimizer: OptimizerName = "lbfgs"
    steps: int | None = None  # objective evaluations at most; None: the engine's default
    finish: Finish = "standard"  # stop earlier (draft) or later (fine) once progress slows
    seed: int = 0
    init: InitMode = "content"
    pooling: Pooling = "avg"
    weights: str = "caffe"  # "caffe", "torchvision" or a path to a local state dict
    single_scale: bool = False  # True: one scale at any size, no coarse to fine (engine.stages)
