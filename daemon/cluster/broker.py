"""The Redis broker both sides talk through (Dramatiq's), its two queues, and the roster: each
worker host's line in a Redis hash, written every few seconds, saying what it runs.

Dramatiq acknowledges a message only after its actor returns, and requeues the unacknowledged
messages of a broker whose heartbeat has stopped for `heartbeat_timeout`, during "maintenance"
that runs on a random share of commands; here every command does it (the work is one sorted-set
read), so a dead worker's job goes to another within about `queue.heartbeat_seconds`. None of
Dramatiq's stock middleware is used: stylebox retries, limits and records jobs in its own journal,
and a job must never be dead-lettered or cut off by a time limit while it is still being painted.
A worker host adds one of its own, deaths.py's, which counts the attempts during which it died.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import dramatiq
import redis
import redis.backoff
import redis.retry
from dramatiq import Message
from dramatiq.brokers.redis import MAINTENANCE_SCALE, RedisBroker
from loguru import logger

from daemon.config.models import QueueSettings

NAMESPACE = "stylebox"
JOBS = "stylebox.jobs"
RESULTS = "stylebox.results"
STYLIZE = "stylise"  # the worker hosts' actor, on JOBS
FINISHED = "finished"  # the coordinator's actor, on RESULTS
ROSTER = f"{NAMESPACE}:workers"
_NO_RETRY = redis.retry.Retry(redis.backoff.NoBackoff(), 0)
ROSTER_SECONDS = 2.0  # how often a worker host writes its line
FORGET_WORKERS_SECONDS = 7 * 86400  # a host gone this long leaves the roster
SOCKET_SECONDS = 5.0  # no command waits longer on a Redis that stopped answering (no retries)
# How long a Dramatiq consumer backs off, at most, between fetches that find nothing (also while
# its thread is busy): the next job starts at most this late after one ends.
POLL_MILLISECONDS = 100

RedisError = redis.RedisError  # what every call here may raise while Redis is away


def connect(settings: QueueSettings) -> RedisBroker:
    """A broker of its own (each side of a process declares its own actors on one)."""
    assert settings.url is not None, "only with queue.url"
    client = redis.Redis.from_url(
        settings.url,
        socket_timeout=SOCKET_SECONDS,
        socket_connect_timeout=SOCKET_SECONDS,
        health_check_interval=30,
        retry=_NO_RETRY,  # the callers retry on their own clocks (a stop must not wait)
    )
    _log_dramatiq_through_loguru()
    return RedisBroker(
        client=client,
        namespace=NAMESPACE,
        middleware=[],
        heartbeat_timeout=int(settings.heartbeat_seconds * 1000),
        maintenance_chance=MAINTENANCE_SCALE,
    )


QUEUE_OF = {STYLIZE: JOBS, FINISHED: RESULTS}  # each actor's queue


def consumer(
    broker: RedisBroker, function: Callable[[dict[str, Any]], None], actor: str, threads: int
) -> dramatiq.Worker:
    """`function` declared as `actor` on its queue, and the Dramatiq worker (not started) whose
    `threads` run it: the one way both sides take messages."""
    queue = QUEUE_OF[actor]
    dramatiq.Actor(
        function, broker=broker, actor_name=actor, queue_name=queue, priority=0, options={}
    )
    return dramatiq.Worker(
        broker, queues={queue}, worker_threads=threads, worker_timeout=POLL_MILLISECONDS
    )


def send(broker: RedisBroker, queue: str, actor: str, payload: dict[str, Any]) -> str:
    """Enqueue `payload` for `actor`; returns the id the message has in Redis."""
    message = Message(queue_name=queue, actor_name=actor, args=(payload,), kwargs={}, options={})
    return broker.enqueue(message).options["redis_message_id"]


def queued(broker: RedisBroker, queue: str, message_id: str) -> bool:
    """Whether the message waits in the queue for a worker (not yet taken by one)."""
    return broker.client.lpos(f"{NAMESPACE}:{queue}", message_id) is not None


def client_for(settings: QueueSettings) -> redis.Redis:
    """A plain client, for reading the roster from `stylebox status` and the web page."""
    assert settings.url is not None, "only with queue.url"
    return redis.Redis.from_url(
        settings.url, socket_timeout=2, socket_connect_timeout=2, retry=_NO_RETRY
    )


def report_in(client: redis.Redis, name: str, line: dict[str, Any]) -> None:
    """A worker host's roster line, stamped with the time."""
    client.hset(ROSTER, name, json.dumps({**line, "seen": time.time()}))


def sign_off(client: redis.Redis, name: str) -> None:
    """A worker host that stops leaves the roster."""
    client.hdel(ROSTER, name)


def roster(client: redis.Redis) -> dict[str, dict[str, Any]]:
    """Every worker host's latest line, read only (the page and `status` call it on a GET);
    lines not heard from in a week are left out, and removed by `forget_silent`."""
    return {name: line for name, line, seen in _lines(client) if not _forgotten(seen)}


def forget_silent(client: redis.Redis) -> None:
    """Remove the roster lines of hosts not heard from in a week (the coordinator's chore)."""
    for name, _, seen in _lines(client):
        if _forgotten(seen):
            client.hdel(ROSTER, name)


def _forgotten(seen: float) -> bool:
    return time.time() - seen > FORGET_WORKERS_SECONDS


def _lines(client: redis.Redis) -> list[tuple[str, dict[str, Any], float]]:
    """Each roster line that a stylebox worker wrote: (host name, line, when it was seen)."""
    lines = []
    for name, raw in client.hgetall(ROSTER).items():
        try:
            line = json.loads(raw)
            seen = float(line["seen"])
            line["devices"] = [str(each) for each in line["devices"]]
            line["jobs"] = {int(job): dict(progress) for job, progress in line["jobs"].items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            continue  # not a line a stylebox worker writes
        lines.append((name.decode() if isinstance(name, bytes) else name, line, seen))
    return lines


def live_roster(client: redis.Redis, heartbeat_seconds: float) -> dict[str, dict[str, Any]]:
    """The roster's hosts heard from within the heartbeat."""
    now = time.time()
    lines = roster(client).items()
    return {name: line for name, line in lines if now - line["seen"] < heartbeat_seconds}


class _ToLoguru(logging.Handler):
    """Dramatiq logs through the standard library; its warnings (a lost connection to Redis,
    a consumer restarting) belong in the daemon's log with the rest, without tracebacks."""

    def emit(self, record: logging.LogRecord) -> None:
        # Warnings at most: Dramatiq says CRITICAL for a Redis that restarts, which it rides out.
        level = "WARNING" if record.levelno >= logging.WARNING else "DEBUG"
        logger.log(level, "dramatiq: {}", record.getMessage())


def _log_dramatiq_through_loguru() -> None:
    dramatiq_logger = logging.getLogger("dramatiq")
    if not any(isinstance(handler, _ToLoguru) for handler in dramatiq_logger.handlers):
        dramatiq_logger.addHandler(_ToLoguru())
        dramatiq_logger.setLevel(logging.WARNING)
        dramatiq_logger.propagate = False
