"""What the notify: channels are told, built where it happens (worker, intake, the service) and
stored with the state change it reports (Journal: the transactional outbox).

An event is a plain JSON object: `id` (a UUID, the same on every delivery: receivers
de-duplicate by it), `type`, `time` (ISO 8601 UTC) and `timestamp` (seconds since the epoch),
`stylebox` (the version), and per type the photo (its name and its path below the inbox), the
preset, the input's sha256, outputs and sidecars (paths below the outbox), the sidecar's losses
and timings, and for a failure its reason.

A job whose photo changed before it was done (superseded) has no event of its own: nothing is
given up, and the new content's job reports its own end.
"""

from __future__ import annotations

import datetime
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from daemon import __version__
from daemon.config import Config
from daemon.paths import shown
from daemon.service.journal import Event, Job


def event(event_type: str, *, event_id: str | None = None, **fields: Any) -> Event:
    """A new event of `event_type`, now; a random id unless given one."""
    now = time.time()
    moment = datetime.datetime.fromtimestamp(now, datetime.UTC).isoformat(timespec="milliseconds")
    payload = {
        "id": event_id or str(uuid.uuid4()),
        "type": event_type,
        "time": moment.replace("+00:00", "Z"),
        "timestamp": now,
        "stylebox": __version__,
        **fields,
    }
    return Event(payload["id"], event_type, now, payload)


def _photo(config: Config, path: Path) -> dict[str, str]:
    """The photo as a receiver reads it: names that are not UTF-8 with `\\xNN` (paths.shown)."""
    below = path.relative_to(config.inbox).as_posix() if path.is_relative_to(config.inbox) else None
    return {"name": shown(path.name), "path": shown(below or path.name)}


def _below_outbox(config: Config, path: Path) -> str:
    return (
        path.relative_to(config.outbox).as_posix()
        if path.is_relative_to(config.outbox)
        else str(path)
    )


def photo_done(
    config: Config, job: Job, image: Path, sidecar_path: Path, sidecar: dict[str, Any]
) -> Event:
    """A photo's result and sidecar are published."""
    return event(
        "photo.done",
        photo=_photo(config, Path(job.source_path)),
        preset=job.preset,
        input_sha256=job.content_hash,
        job=job.id,
        outputs=[_below_outbox(config, image)],
        sidecars=[_below_outbox(config, sidecar_path)],
        size=sidecar["size"],
        losses=sidecar["losses"],
        seconds=sidecar["seconds"],
        evaluations=sidecar["evaluations"],
        device=sidecar["device"],
    )


def photo_given_up(config: Config, job: Job | None, path: Path, reason: str, *, kind: str) -> Event:
    """A photo quarantined (it cannot be used) or failed for good (its retries spent); `job`
    None for a file that never became one (a link, no preset for it)."""
    fields: dict[str, Any] = {"photo": _photo(config, path), "reason": shown(reason)}
    if job is not None:
        fields |= {
            "preset": job.preset,
            "input_sha256": job.content_hash,
            "job": job.id,
            "attempts": job.attempts,
        }
    return event(f"photo.{kind}", **fields)


def photo_duplicate(config: Config, path: Path, of: Job) -> Event:
    """A photo already done (or under way) for its preset, under this name or another. A copy
    kept in the inbox is met again at each start: its id comes from what it reports, so it is
    told once (the journal ignores an id it has)."""
    name = f"{of.content_hash}:{of.fingerprint}:{path}"
    return event(
        "photo.duplicate",
        event_id=str(uuid.uuid5(uuid.NAMESPACE_URL, "stylebox:duplicate:" + shown(name))),
        photo=_photo(config, path),
        preset=of.preset,
        input_sha256=of.content_hash,
        job=of.id,
        duplicate_of=_photo(config, Path(of.source_path)),
        outputs=[_below_outbox(config, Path(p)) for p in of.outputs[:1]],
    )


def daemon_event(kind: str, config: Config) -> Event:
    """The daemon started or stopped."""
    return event(f"daemon.{kind}", host=socket.gethostname(), inbox=str(config.inbox))
