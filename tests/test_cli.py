"""The `stylebox` command as a user runs it: a real subprocess, real files, exit codes, messages."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, SAMPLE_PHOTO
from PIL import Image

PHOTO = SAMPLE_PHOTO  # 512 x 600
STYLE = REPO / "styles" / "starry_night.jpg"


def stylebox(*args: object, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """Run the CLI as `python -m daemon`, the same entry point as the console script."""
    command = [sys.executable, "-m", "daemon", *map(str, args)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line that says what went wrong (the last one on stderr)."""
    return result.stderr.strip().splitlines()[-1]


def test_stylize_writes_the_picture_and_reports(tmp_path) -> None:
    out = tmp_path / "sub" / "x.png"
    result = stylebox("stylize", PHOTO, "--style", STYLE, "--size", 48, "--steps", 5, "--out", out)
    assert result.returncode == 0, result.stderr
    with Image.open(out) as image:
        assert image.size == (41, 48)
        assert "icc_profile" in image.info
    assert "evaluations" in result.stdout and "objective" in result.stdout
    # the last progress line says the best objective, the one the result has
    last = [line for line in result.stderr.splitlines() if "evaluation 5/5" in line][-1]
    best = last.rsplit("best objective ", 1)[1]
    assert f"objective {float(best):.4g}" in result.stdout


def test_stylize_with_a_preset_from_the_shipped_config(tmp_path) -> None:
    out = tmp_path / "x.jpg"
    config = REPO / "config.yaml"
    result = stylebox("stylize", PHOTO, "--preset", "the_scream", "--config", config,
                      "--size", 40, "--steps", 3, "--out", out)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert Image.open(out).size == (34, 40)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--style", STYLE, "--out", "{tmp}/x.png"), "missing.jpg"),
        (("--out", "{tmp}/x.png"), "--style"),
        (("--style", STYLE, "--out", "{tmp}/x.gif"), ".gif"),
        (("--style", STYLE, "--colour", "sepia", "--out", "{tmp}/x.png"), "sepia"),
        (("--preset", "swirl", "--out", "{tmp}/x.png"), "--config"),
        (("--style", STYLE, "--size", "0", "--out", "{tmp}/x.png"), "--size"),
        (("--style", STYLE, "--alpha", "0", "--beta", "0", "--out", "{tmp}/x.png"), "both be 0"),
        (("--style", "{tmp}/nope.png", "--out", "{tmp}/x.png"), "nope.png"),
    ],
)
def test_bad_usage_or_input_exits_2_with_one_line(tmp_path, args, expected) -> None:
    photo = tmp_path / "missing.jpg" if expected == "missing.jpg" else PHOTO
    filled = [str(a).replace("{tmp}", str(tmp_path)) for a in args]
    result = stylebox("stylize", photo, "--steps", 1, "--size", 32, *filled)  # the case wins
    assert result.returncode == 2, result.stderr
    assert expected in error_line(result)
    assert not list(tmp_path.glob("x.*"))


def test_corrupt_photo_exits_2_naming_the_file(tmp_path) -> None:
    photo = tmp_path / "broken.jpg"
    photo.write_bytes(PHOTO.read_bytes()[:2000])
    result = stylebox("stylize", photo, "--style", STYLE, "--steps", 1, "--out", tmp_path / "x.png")
    assert result.returncode == 2
    assert "broken.jpg" in error_line(result)


def test_unknown_preset_lists_the_known_ones(tmp_path) -> None:
    config = REPO / "config.yaml"
    result = stylebox("stylize", PHOTO, "--preset", "cubism", "--config", config,
                      "--out", tmp_path / "x.png")  # fmt: skip
    assert result.returncode == 2
    assert "cubism" in error_line(result) and "starry_night" in error_line(result)


def test_check_accepts_the_shipped_config() -> None:
    for root in ("inbox", "outbox", "state"):  # as the README's first command makes them
        (REPO / "data" / root).mkdir(parents=True, exist_ok=True)
    result = stylebox("check", "--config", "config.yaml")
    assert result.returncode == 0, result.stderr
    assert "starry_night" in result.stdout


def test_check_flags_a_bad_config_with_its_line(tmp_path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "inbox: in\noutbox: out\nstate_dir: state\npresets:\n  p:\n"
        f"    style: {STYLE}\n    beta: lots\n"
    )
    result = stylebox("check", "--config", config)
    assert result.returncode == 2
    assert "bad.yaml:7: presets.p.beta" in result.stderr


def test_a_reader_that_stops_early_ends_the_command_quietly(tmp_path) -> None:
    """Issue 23: `stylebox status | head -1` sometimes ended in BrokenPipeError, rc 1. Here
    the reader is gone before the command writes at all: every write meets a closed pipe."""
    from daemon_harness import write_config

    from daemon.service.journal import Journal

    for folder in ("inbox", "outbox", "state"):
        (tmp_path / folder).mkdir()
    config = write_config(tmp_path)
    Journal(tmp_path / "state" / "journal.sqlite3").close()  # what `status` reads
    for args in (("status", "--config", config), ("check", "--config", config)):
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            command = [sys.executable, "-m", "daemon", *map(str, args)]
            result = subprocess.run(
                command, cwd=REPO, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120
            )
        finally:
            os.close(write_end)
        assert (result.returncode, result.stderr) == (0, ""), (args[0], result.stderr)


def test_check_and_the_daemons_start_name_a_painting_that_is_not_an_image(tmp_path) -> None:
    """Issue 23: `check` passed it; `run` then exited 2 naming neither the config's line nor
    the preset, as if a photo were wrong."""
    (tmp_path / "notes.png").write_text("not a painting\n")
    config = tmp_path / "config.yaml"
    config.write_text(
        "inbox: in\noutbox: out\nstate_dir: state\npresets:\n  p:\n    style: notes.png\n"
    )
    for folder in ("in", "out", "state"):
        (tmp_path / folder).mkdir()
    expected = (
        f"{config}:6: presets.p.style: {tmp_path / 'notes.png'}: not an image in a format "
        "this install reads (stylebox check lists them)"
    )
    for command in ("check", "run"):
        result = stylebox(command, "--config", config)
        assert result.returncode == 2, result.stderr
        assert error_line(result) == f"stylebox: error: {expected}", result.stderr
    Image.new("RGB", (16, 16), (90, 30, 200)).save(tmp_path / "notes.png", format="PNG")
    result = stylebox("check", "--config", config)
    assert result.returncode == 0, result.stderr
    assert "every photo goes to preset p, the only one" in result.stdout.splitlines()
