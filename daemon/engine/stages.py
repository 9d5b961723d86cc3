"""Coarse to fine: the sizes a large painting goes through, and how long each may run.

VGG's receptive fields are fixed in pixels (relu5_1 sees 92 px), so a 2048 px run at one scale
paints small repetitive texture and none of the painting's large structures (Gatys et al. 2017,
"Controlling Perceptual Factors in Neural Style Transfer"). Gatys' own code paints 512 px first
and starts 1024 px from its upsampled result with the targets recomputed there; neural-style's
multires scripts go 256 -> 512 -> ... -> 3620, fewer iterations at each. Here the output's long
side is halved until the next half would be under `FIRST_STAGE_MIN`: a 1024 px painting starts
at 512, 2048 at 512, 3000 at 750; anything under twice that is one scale, as before.

Each stage runs the same objective (content at relu4_2, Grams at relu1_1..relu5_1) at its own
size, with its own targets, to the stopping rule; the first stage may use the whole budget, each
finer one two thirds of it: the coarse stage sets the composition, the fine ones refine strokes,
and a fine evaluation costs four times a coarse one. Two thirds, measured at 1024 px, ends level
with one scale at its own size and keeps most of the large structures; a longer top stage
erodes them (DECISIONS.md, coarse to fine).
"""

from __future__ import annotations

from dataclasses import dataclass

FIRST_STAGE_MIN = 512  # px, the long side of the coarsest stage: the paper's size
FINER_STAGE_SHARE = 2 / 3  # a finer stage's budget, as a share of the first stage's


@dataclass(frozen=True)
class Stage:
    """One scale of a run: its output size (H, W) and its budget of evaluations."""

    size: tuple[int, int]
    budget: int


def plan(size: tuple[int, int], budget: int, *, single_scale: bool = False) -> list[Stage]:
    """The stages for an output of `size` (H, W) and a budget of evaluations, coarsest first;
    the last is `size` itself."""
    height, width = size
    sides = [max(height, width)]
    while not single_scale and sides[0] // 2 >= FIRST_STAGE_MIN:
        sides.insert(0, sides[0] // 2)
    later = max(1, round(budget * FINER_STAGE_SHARE))
    stages = []
    for index, side in enumerate(sides):
        scale = side / max(height, width)
        stage_size = (max(1, round(height * scale)), max(1, round(width * scale)))
        if index == len(sides) - 1:
            stage_size = size
        stages.append(Stage(stage_size, budget if index == 0 else later))
    return stages


@dataclass(frozen=True)
class Position:
    """Where one stage stands in its plan, as its progress reports say it: which of how many,
    and at most how many evaluations of its size the later stages may still cost (an
    evaluation's cost follows its pixels: each finer stage's costs about four times), so that a
    progress line can say at most how long the whole run has left."""

    stage: int = 1
    stages: int = 1
    later_evaluations: float = 0.0


def position(plan: list[Stage], index: int) -> Position:
    """Stage `index`'s (from 0) Position in `plan`."""
    pixels = plan[index].size[0] * plan[index].size[1]
    later = sum(s.budget * s.size[0] * s.size[1] / pixels for s in plan[index + 1 :])
    return Position(index + 1, len(plan), later)
