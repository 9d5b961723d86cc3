"""The image, built and run with podman (bench/container_check.sh): minutes and gigabytes, so
only with `pytest -m container`."""

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.container
def test_the_cpu_image_stylizes_a_photo_and_stops_on_sigterm() -> None:
    run = subprocess.run(
        ["bash", str(REPO / "bench" / "container_check.sh")],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.splitlines()[-1].startswith("container check: ok"), run.stdout[-3000:]
