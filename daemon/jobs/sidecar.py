"""The result's JSON companion: what made it, from what, how, where and by whom."""

from __future__ import annotations

import platform
from dataclasses import asdict
from typing import Any

from daemon import __version__
from daemon.config import Preset
from daemon.engine import device, transfer
from daemon.engine.settings import FULL_SIZE, StyleSettings
from daemon.jobs.work import Loaded


def sidecar_for(
    loaded: Loaded,
    preset: Preset,
    result: transfer.Result,
    batch: int,
    now: float,
    worker: dict[str, Any],
) -> dict[str, Any]:
    """The sidecar of a loaded job's result; `batch`: photos painted together, this one
    included; `worker`: the host (and process) that painted it."""
    work = loaded.work
    h, w = result.image.shape[-2:]
    frames = loaded.photo.frames
    # an animation or a multi-page file: which frame or page was painted
    picture = {"input_frames": frames, "input_note": loaded.photo.note} if frames > 1 else {}
    return {
        **picture,
        "source": work.source.name,
        "input_sha256": work.content_hash,
        "preset": preset.name,
        "preset_fingerprint": preset.fingerprint,
        "parameters": _as_configured(preset.settings),
        "styles": [{"image": s.path.name, "weight": s.weight} for s in preset.styles],
        "size": [w, h],
        "evaluations": result.evaluations,
        "budget": result.budget,
        "losses": asdict(result.losses),
        # each scale, coarsest first: one for a single-scale run (engine.stages)
        "stages": [
            {
                "size": [stage.size[1], stage.size[0]],
                "evaluations": stage.evaluations,
                "budget": stage.budget,
                "seconds": round(stage.seconds, 3),
                "objective": stage.objective,
                "blocks": stage.blocks,
            }
            for stage in result.stages
        ],
        "seconds": {
            "stylise": round(result.seconds, 3),
            "queued": round(now - work.enqueued_at, 3),
        },
        "device": result.device,
        "precision": result.precision,
        "batch": batch,
        "attempt": work.attempt,
        "worker": dict(worker),
        "versions": {
            "stylebox": __version__,
            "torch": device.TORCH_VERSION,
            "python": platform.python_version(),
        },
    }


def _as_configured(settings: StyleSettings) -> dict[str, Any]:
    """The preset's parameters as the config gives them (`size: full`, not its stand-in)."""
    parameters = asdict(settings)
    if parameters["size"] == FULL_SIZE:
        parameters["size"] = "full"
    return parameters
