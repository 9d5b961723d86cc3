"""Dramatiq middleware that counts the attempts during which a worker host died.

Dramatiq redelivers a message whose worker stopped beating; a photo that kills every worker it
reaches would then be painted, and kill, forever. So before the actor runs, each job of the
message is counted in Redis, and once the actor has returned (every job reported) the count is
taken back: what stays counted are attempts that never returned, and a job whose count passes
the attempts allowed is failed instead of painted again.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import dramatiq
import redis

from daemon.cluster import broker as brokers

COUNT_SECONDS = 7 * 86400  # a count outlives any retry of its job


class DeathCount(dramatiq.Middleware):
    """Per message, in the worker thread that runs it: `deaths(job_id)` is how many attempts at
    the job died, this one included."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._counted = threading.local()  # the running message's counts, per worker thread

    def deaths(self, job_id: int) -> int:
        """Attempts at this job so far that have not returned, the running one included; 0 when
        Redis was away as it began (then nothing was counted)."""
        return getattr(self._counted, "counts", {}).get(job_id, 0)

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.Message) -> None:
        counts: dict[int, int] = {}
        for job_id, content_hash in _jobs_of(message):
            key = _key(job_id, content_hash)
            try:
                with self.client.pipeline() as both:
                    count, _ = both.incr(key).expire(key, COUNT_SECONDS).execute()
            except brokers.RedisError:
                continue  # not counted while Redis is away; its report waits for it anyway
            counts[job_id] = int(count)
        self._counted.counts = counts

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.Message,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        counts = getattr(self._counted, "counts", {})
        for job_id, content_hash in _jobs_of(message):
            if job_id in counts:
                with contextlib.suppress(brokers.RedisError):
                    self.client.decr(_key(job_id, content_hash))
        self._counted.counts = {}

    after_skip_message = after_process_message


def _jobs_of(message: dramatiq.Message) -> list[tuple[int, str]]:
    """(job id, content hash) of each job in an assignment's message; none in a message this
    version cannot read (the actor says so)."""
    try:
        return [(int(o["id"]), str(o["content_hash"])) for o in message.args[0]["orders"]]
    except (IndexError, KeyError, TypeError, ValueError):
        return []


def _key(job_id: int, content_hash: str) -> str:
    return f"{brokers.NAMESPACE}:tries:{job_id}:{content_hash[:16]}"
