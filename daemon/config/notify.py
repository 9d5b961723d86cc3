"""The `notify:` section: which events go where (an events log, webhooks, Apprise).

Checked as written only: whether a secret file can be read and whether Apprise knows a URL
needs the machine (and Apprise itself), so `checks.machine_problems` asks that, once, apart.
"""

import urllib.parse
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, Strict, field_validator

from daemon.config.values import (
    STRICT,
    ExistingFile,
    NonNegative,
    Positive,
    Seconds,
    Section,
    at_least_one,
    not_blank,
)

EventType = Literal[
    "photo.done",
    "photo.quarantined",
    "photo.failed",
    "photo.duplicate",
    "daemon.started",
    "daemon.stopped",
]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)
EventTypes = Annotated[tuple[EventType, ...], Strict(False), at_least_one("event type")]


def _webhook_url(url: str) -> str:
    """An http(s) URL with a host, as urllib sends it; no user or password in it (urllib would
    not send them, and they would reach the log): put a secret in the path or use secret_file."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError as error:
        raise ValueError(f"not a URL: {error}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL with a host, got {url!r}")
    if "@" in parts.netloc:
        raise ValueError("no user or password in the URL: urllib does not send them")
    return url


def _apprise_urls(value: Any) -> Any:
    """`apprise:` may be just its list of URLs."""
    return {"urls": value} if isinstance(value, list) else value


class WebhookSettings(BaseModel):
    """POST each event as JSON; signed with HMAC-SHA256 when `secret_file` is set (read by the
    channel that signs; `stylebox check` and the start read it once to refuse an empty one)."""

    model_config = STRICT
    url: Annotated[str, AfterValidator(_webhook_url)]
    events: EventTypes = EVENT_TYPES
    secret_file: ExistingFile | None = None
    timeout_seconds: Seconds = 10.0


class AppriseSettings(BaseModel):
    """Apprise URLs (ntfy://, tgram://, mailto://, json://, ...); `digest_minutes` > 0 sends
    one message per batch of events, at most one per that many minutes."""

    model_config = STRICT
    urls: Annotated[
        tuple[Annotated[str, Strict(), AfterValidator(not_blank)], ...], Strict(False)
    ] = ()
    events: EventTypes = ("photo.done", "photo.quarantined", "photo.failed")
    digest_minutes: NonNegative = 0.0


class NotifySettings(BaseModel):
    """Where events go; each is delivered at least once (receivers de-duplicate by its id),
    retried with a growing wait for up to `give_up_after_hours`."""

    model_config = STRICT
    events_log: bool = False  # <outbox>/events.jsonl
    events_log_max_mb: Positive = 10.0
    webhooks: Annotated[tuple[WebhookSettings, ...], Strict(False)] = ()
    apprise: Annotated[AppriseSettings, BeforeValidator(_apprise_urls), Section] = Field(
        default_factory=AppriseSettings
    )
    give_up_after_hours: Seconds = 24.0

    @field_validator("webhooks")
    @classmethod
    def _one_of_each(cls, webhooks: tuple[WebhookSettings, ...]) -> tuple[WebhookSettings, ...]:
        """A URL once: its deliveries are kept under it."""
        urls = [hook.url for hook in webhooks]
        if len(set(urls)) < len(urls):
            raise ValueError("a URL is listed twice; give it once, with all its events")
        return webhooks
