"""One photo through load -> stylise, as the worker and the CLI run it."""

import dataclasses

import torch
from conftest import REPO, SAMPLE_PHOTO
from loguru import logger

from daemon import pipeline
from daemon.config import StyleImage
from daemon.engine import blocks, device, memory
from daemon.engine.settings import StyleSettings


@dataclasses.dataclass
class _SmallDevice(device.Models):
    """A device with little memory free: what a GPU shared with other work looks like."""

    budget: int = 0

    def memory_budget_bytes(self) -> int:
        return self.budget


def test_a_size_the_device_cannot_hold_even_in_blocks_is_reduced_with_a_log_line() -> None:
    settings = StyleSettings(size=96, steps=2)
    # room for 64 px in blocks, not 96 (the sample is 512 x 600)
    crop = memory.ACTIVATION_BYTES * (memory.MIN_TILE + 2 * blocks.MARGIN) ** 2
    per_pixel = memory.STORAGE_BYTES + memory.MIN_HISTORY * memory.PAIR_BYTES
    budget = memory.BASE_BYTES + crop + per_pixel * 64 * 55
    assert memory.largest_side(600, 512, budget) == 64
    models = _SmallDevice(torch.device("cpu"), budget=budget)
    styles = pipeline.load_styles(
        [StyleImage(REPO / "styles" / "starry_night.jpg")], settings, max_pixels=10**8
    )
    lines: list[str] = []
    sink = logger.add(lines.append, level="WARNING")
    try:
        result, _ = pipeline.stylize_file(SAMPLE_PHOTO, styles, settings, models, max_pixels=10**8)
    finally:
        logger.remove(sink)
    assert max(result.image.shape[-2:]) == 64
    assert any("grace_hopper.jpg" in line and "64 px" in line for line in lines)


def test_a_size_that_fits_is_left_alone() -> None:
    settings = StyleSettings(size=64, steps=2)
    models = _SmallDevice(torch.device("cpu"), budget=2**40)
    styles = pipeline.load_styles(
        [StyleImage(REPO / "styles" / "starry_night.jpg")], settings, max_pixels=10**8
    )
    result, _ = pipeline.stylize_file(SAMPLE_PHOTO, styles, settings, models, max_pixels=10**8)
    assert tuple(result.image.shape[-2:]) == (64, 55)


def test_a_batch_holds_as_many_photos_as_the_device_has_room_for() -> None:
    """The worker takes no more mates than this, so a batch cannot run out of memory where one
    photo would not: every photo brings its own activations and L-BFGS history."""
    one = memory.estimated_bytes(48, 64) - memory.BASE_BYTES
    models = _SmallDevice(torch.device("cpu"), budget=memory.BASE_BYTES + 2 * one)
    assert pipeline.room_for((48, 64), models) == 2
    assert pipeline.room_for((96, 128), models) == 0  # not even one: stylised alone, smaller
    models.budget = memory.BASE_BYTES + 3 * one - 1
    assert pipeline.room_for((48, 64), models) == 2


def test_check_warns_of_a_preset_size_the_device_cannot_paint(tmp_path) -> None:
    """`stylebox check` prints these: a size whose square photo exceeds what fits in blocks, and
    `full` on a device below the largest sensors; a size that fits says nothing."""
    from daemon.config import load_config

    config = tmp_path / "config.yaml"
    config.write_text(
        "inbox: in\noutbox: out\nstate_dir: state\nrouting:\n  default_preset: small\npresets:\n"
        f"  small:\n    style: {REPO / 'styles' / 'starry_night.jpg'}\n    size: 512\n"
        f"  print:\n    style: {REPO / 'styles' / 'starry_night.jpg'}\n    size: 4096\n"
        f"  full:\n    style: {REPO / 'styles' / 'starry_night.jpg'}\n    size: full\n",
        encoding="utf-8",
    )
    presets = load_config(config).presets
    crop = memory.ACTIVATION_BYTES * (memory.MIN_TILE + 2 * blocks.MARGIN) ** 2
    per_pixel = memory.STORAGE_BYTES + memory.MIN_HISTORY * memory.PAIR_BYTES
    budget = memory.BASE_BYTES + crop + per_pixel * 2048 * 2048  # 4 MP: 2048 px square
    warnings = pipeline.sizes_out_of_reach(presets, budget, "cuda:0")
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("preset print: size 4096 px: cuda:0 with")
    assert "a square photo at most 2048 px, a 3:2 one 2508 px" in warnings[0]
    assert warnings[1].startswith("preset full: size full:") and "at most 4 MP" in warnings[1]
    roomy = memory.BASE_BYTES + crop + per_pixel * 200_000_000
    assert pipeline.sizes_out_of_reach(presets, roomy, "cpu") == []
