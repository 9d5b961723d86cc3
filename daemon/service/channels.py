"""The notify: channels, each able to deliver events and to say how a try went: delivered,
worth another try later, or never going to work (given up, with why).

No channel runs a command: webhooks and the events log serve pipelines (SECURITY.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from daemon import __version__
from daemon.config import Config
from daemon.config.models import EVENT_TYPES, AppriseSettings, WebhookSettings
from daemon.outbox import fsync_dir
from daemon.service.journal import DeliveryState, Event
from daemon.service.roots import RootWatch
from daemon.service.thumbnails import Thumbnails

EVENTS_LOG = "events.jsonl"
EVENTS_LOG_KEPT = 5  # rotated files: events.jsonl.1 (newest) .. .5
RETRIED_STATUSES = frozenset({408, 429})  # 4xx that mean "later", not "never"
_TAIL_BYTES = 1 << 16  # far longer than any event's line
DIGEST_LINES = 20  # a digest names this many events, then counts the rest


@dataclass(frozen=True)
class Outcome:
    """How one try went, for every event it carried."""

    state: DeliveryState
    detail: str  # "HTTP 204", why it failed, ...


class Channel(Protocol):
    """Where events go. `name` is its key in the journal's deliveries (stable across restarts,
    no secret in it); `label` is how logs name it (no secret in it either)."""

    name: str
    label: str
    events: Sequence[str]
    digest_seconds: float  # > 0: deliver() gets every due event at once, this often at most
    expires: bool  # events tried and refused give_up_after_hours are given up
    most_retry_seconds: float  # the longest wait between two tries while its tries fail

    def deliver(self, events: Sequence[Event]) -> Outcome: ...


def _json_line(event: Event) -> bytes:
    return json.dumps(event.payload, sort_keys=True, separators=(",", ":")).encode() + b"\n"


class EventsLog:
    """<outbox>/events.jsonl: one JSON line per event, fsynced before it counts as delivered,
    rotated at a size (events.jsonl.1 is the newest of the old ones). Nothing is written while
    the outbox is gone or not the mount it was (service/roots.py): the line would land on the
    local disk under the share's mount point, and count as delivered."""

    name = "events_log"
    digest_seconds = 0.0
    expires = False  # a full disk holds events back for as long as it takes, never drops them
    most_retry_seconds = 60.0  # a try is one append: room is found within a minute of its return
    events: Sequence[str] = EVENT_TYPES

    def __init__(self, path: Path, *, max_bytes: int, file_mode: int) -> None:
        self.path = path
        self.label = f"events log {path}"
        self.max_bytes = max_bytes
        self.file_mode = file_mode
        self._checked = False
        self._outbox = RootWatch({"outbox": path.parent})

    def deliver(self, events: Sequence[Event]) -> Outcome:
        if (problem := self._outbox.problem()) is not None:
            return Outcome(DeliveryState.PENDING, problem)
        try:
            for event in events:
                self._append(_json_line(event))
        except OSError as exc:  # a full disk, a share gone: the events wait in the journal
            return Outcome(DeliveryState.PENDING, f"cannot write {self.path}: {exc.strerror}")
        return Outcome(DeliveryState.SENT, "written")

    def _append(self, line: bytes) -> None:
        """One whole line, durable, or none: a short write (a full disk) is cut back off."""
        if not self._checked:
            self._drop_a_torn_line()
        size = self.path.stat().st_size if self.path.exists() else 0
        if size and size + len(line) > self.max_bytes:
            self._rotate()
            size = 0
        created = size == 0 and not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, self.file_mode)
            start = os.fstat(fd).st_size
            try:
                written = 0
                while written < len(line):
                    written += os.write(fd, line[written:])
                os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
                raise
        finally:
            os.close(fd)
        if created:  # its name must outlast a power cut, as the lines in it do
            fsync_dir(self.path.parent)

    def _drop_a_torn_line(self) -> None:
        """A crash in the middle of a write leaves part of a line: cut it off (its event was
        not marked delivered, so it is written whole again). Once per process, when it
        succeeds: a share not there yet is looked at again next time."""
        with contextlib.suppress(FileNotFoundError), open(self.path, "rb+") as file:
            start = max(0, file.seek(0, os.SEEK_END) - _TAIL_BYTES)
            file.seek(start)
            tail = file.read()
            cut = tail.rfind(b"\n")
            torn = tail and not tail.endswith(b"\n") and (cut >= 0 or start == 0)
            if torn:  # else whole, or a line longer than any of ours: not ours to cut
                file.truncate(start + cut + 1)
                os.fsync(file.fileno())
        self._checked = True

    def _rotate(self) -> None:
        for index in range(EVENTS_LOG_KEPT - 1, 0, -1):
            older = self.path.with_name(f"{EVENTS_LOG}.{index}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{EVENTS_LOG}.{index + 1}"))
        os.replace(self.path, self.path.with_name(f"{EVENTS_LOG}.1"))
        fsync_dir(self.path.parent)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is not followed (urllib would turn the POST into a GET): it is retried."""

    def redirect_request(self, *args, **kwargs):
        return None


def webhook_name(url: str) -> str:
    """A webhook's key in the journal: no secret of its URL in it."""
    return "webhook:" + hashlib.sha256(url.encode()).hexdigest()[:16]


def webhook_label(url: str) -> str:
    """How logs and `status` name a webhook: without its path, where Slack, Discord and Home
    Assistant put their secret; the key's start tells two of one host apart."""
    parts = urllib.parse.urlsplit(url)
    return f"webhook {parts.scheme}://{parts.netloc} ({webhook_name(url)[8:16]})"


class Webhook:
    """POST each event as JSON, with `X-Stylebox-Signature: sha256=<hex HMAC-SHA256 of the
    body>` when a secret is set. 2xx is delivered; 4xx but 408 and 429 is given up; anything
    else (3xx, 408, 429, 5xx, no answer within the timeout) is tried again later."""

    digest_seconds = 0.0
    expires = True
    most_retry_seconds = 60.0  # a try is one request: a receiver back is found within a minute

    def __init__(self, settings: WebhookSettings) -> None:
        self.url = settings.url
        self.name, self.label = webhook_name(settings.url), webhook_label(settings.url)
        self.events = settings.events
        self.timeout = settings.timeout_seconds
        self.secret = settings.secret_file.read_bytes().strip() if settings.secret_file else None
        self._opener = urllib.request.build_opener(_NoRedirects)

    def deliver(self, events: Sequence[Event]) -> Outcome:
        (event,) = events
        body = _json_line(event)[:-1]
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"stylebox/{__version__}",
            "X-Stylebox-Event": event.type,
            "X-Stylebox-Delivery": event.id,
        }
        if self.secret is not None:
            digest = hmac.new(self.secret, body, hashlib.sha256).hexdigest()
            headers["X-Stylebox-Signature"] = f"sha256={digest}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return Outcome(DeliveryState.SENT, f"HTTP {response.status}")
        except urllib.error.HTTPError as exc:
            final = 400 <= exc.code < 500 and exc.code not in RETRIED_STATUSES
            state = DeliveryState.GIVEN_UP if final else DeliveryState.PENDING
            return Outcome(state, f"HTTP {exc.code} {exc.reason}")
        except (OSError, ValueError, http.client.HTTPException) as exc:  # refused, timed out,
            reason = getattr(exc, "reason", exc)  # DNS, TLS, not HTTP at all
            return Outcome(DeliveryState.PENDING, f"{type(exc).__name__}: {reason}")


class AppriseChannel:
    """Apprise's services (ntfy, Gotify, Telegram, mail, MQTT, ...): a short title and body,
    the result's thumbnail attached where the service takes one; with `digest_minutes`, one
    message for every event since the last, at most that often."""

    name = "apprise"
    label = "apprise"
    expires = True
    # A failed try may have reached some of its services, which each try again would tell
    # again: tries go on less often, up to an hour apart.
    most_retry_seconds = 3600.0

    def __init__(self, settings: AppriseSettings, thumbnails: Thumbnails, config: Config) -> None:
        import apprise  # the optional extra: `stylebox check` says so when it is missing

        self.events = settings.events
        self.digest_seconds = settings.digest_minutes * 60
        self.thumbnails = thumbnails
        self.config = config
        self._apprise = apprise.Apprise()
        for url in settings.urls:
            self._apprise.add(url)

    def deliver(self, events: Sequence[Event]) -> Outcome:
        title, body = message(events)
        attach = self._thumbnail(events[0]) if len(events) == 1 else None
        sent = self._apprise.notify(title=title, body=body, attach=attach)
        if sent:
            return Outcome(DeliveryState.SENT, "sent")
        return Outcome(DeliveryState.PENDING, "Apprise could not reach every service")

    def _thumbnail(self, event: Event) -> str | None:
        payload = event.payload
        if event.type != "photo.done" or not payload.get("outputs"):
            return None
        result = self.config.outbox / payload["outputs"][0]
        key = f"{payload['job']}-result"
        made = self.thumbnails.of(key, result, (self.config.outbox,), self.config.max_input_pixels)
        return str(made) if made is not None else None


def message(events: Sequence[Event]) -> tuple[str, str]:
    """A title and a body for one event, or a digest of several."""
    if len(events) == 1:
        return _one(events[0])
    done = [e for e in events if e.type == "photo.done"]
    failed = [e for e in events if e.type in ("photo.quarantined", "photo.failed")]
    parts = [f"{len(done)} done" if done else "", f"{len(failed)} failed" if failed else ""]
    title = "stylebox: " + ", ".join(part for part in parts if part) if done or failed else ""
    lines = [_one(e)[1] for e in events[:DIGEST_LINES]]
    if len(events) > DIGEST_LINES:
        lines.append(f"and {len(events) - DIGEST_LINES} more")
    return title or f"stylebox: {len(events)} events", "\n".join(lines)


def _one(event: Event) -> tuple[str, str]:
    payload = event.payload
    name = payload.get("photo", {}).get("name", "")
    preset = payload.get("preset", "")
    if event.type == "photo.done":
        seconds = payload["seconds"]["stylise"]
        return f"{preset}: {name} done", f"{preset}: {name} done in {seconds:.1f} s"
    if event.type in ("photo.quarantined", "photo.failed"):
        kind = event.type.removeprefix("photo.")
        return f"{name} {kind}", f"{name} {kind}: {payload['reason']}"
    if event.type == "photo.duplicate":
        return f"{name}: a duplicate", f"{name} was done already ({preset}): not done again"
    if event.type == "test":
        return "stylebox: a test", "stylebox notify-test: this channel works"
    kind = event.type.removeprefix("daemon.")
    return f"stylebox {kind}", f"stylebox {kind} on {payload.get('host', '?')}"


def _events_log(config: Config) -> EventsLog:
    """The events log the config asks for (making one opens nothing)."""
    max_bytes = int(config.notify.events_log_max_mb * 1024 * 1024)
    path = config.outbox / EVENTS_LOG
    return EventsLog(path, max_bytes=max_bytes, file_mode=config.output.file_mode)


def channel_labels(config: Config) -> dict[str, str]:
    """Each configured channel's journal key and label, without starting any of them."""
    notify = config.notify
    labels = {EventsLog.name: _events_log(config).label} if notify.events_log else {}
    labels |= {webhook_name(hook.url): webhook_label(hook.url) for hook in notify.webhooks}
    if notify.apprise.urls:
        labels[AppriseChannel.name] = AppriseChannel.label
    return labels


def channels_for(config: Config) -> list[Channel]:
    """The channels the config asks for."""
    notify = config.notify
    found: list[Channel] = [_events_log(config)] if notify.events_log else []
    found.extend(Webhook(hook) for hook in notify.webhooks)
    if notify.apprise.urls:
        found.append(AppriseChannel(notify.apprise, Thumbnails(config.state_dir), config))
    return found
