"""What one stylisation is asked to do: the engine's parameters, with their defaults.

Kept free of torch so that `stylebox check` and the config parser stay light; the engine, the
config parser and the CLI all take their defaults from `StyleSettings`.
"""

from dataclasses import dataclass
from typing import Literal

# Layers of Gatys et al. (2016), named as in the paper whatever the weight source.
PAPER_CONTENT_LAYERS: tuple[str, ...] = ("relu4_2",)
PAPER_STYLE_LAYERS: tuple[tuple[str, float], ...] = tuple(
    (name, 1 / 5) for name in ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
)

ColourMode = Literal["style", "luminance", "histogram"]
OptimizerName = Literal["lbfgs", "adam"]
Pooling = Literal["avg", "max"]
InitMode = Literal["content", "noise"]

COLOUR_MODES: tuple[str, ...] = ("style", "luminance", "histogram")
OPTIMIZERS: tuple[str, ...] = ("lbfgs", "adam")
POOLINGS: tuple[str, ...] = ("avg", "max")
INIT_MODES: tuple[str, ...] = ("content", "noise")
# Arithmetic of the network's passes; Grams and losses are always fp32 (fp16 or bf16 Grams
# overflow or lose the style); "tf32" is fp32 on the CPU. Measured on an H200 at 512 px, 300
# evaluations, with torch's L-BFGS (bench/gpu_check.py): fp32 8.17 s to 4.2732e10 (again:
# 4.2734e10); TF32 5.83 s to 4.2689e10, but only once restarted: its gradients had made that
# L-BFGS give up after 9 evaluations (3.3e11), silently; bf16 autocast 5.19 s to 4.2892e10
# (+0.37 %). fp32 stays the default until TF32 is measured with engine.lbfgs on a GPU. On this
# CPU (AVX-512 BF16) bf16 reached the reference's objective at 128 px in 4.6 s against 6.7 s but
# stalled 1.3 % higher (5.335e10 vs 5.266e10); CPUs without bf16 units emulate it.
PRECISIONS: tuple[str, ...] = ("fp32", "tf32", "bf16")
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
    seed: int = 0
    init: InitMode = "content"
    pooling: Pooling = "avg"
    weights: str = "caffe"  # "caffe", "torchvision" or a path to a local state dict
