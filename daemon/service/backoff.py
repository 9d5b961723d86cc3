"""The one backoff of the project: a job retried after a transient fault, an event a receiver
refused, a worker host's report while Redis is away. Deterministic (no jitter), so a user can
read in the log when the next try comes, and tests can wait for it."""

from __future__ import annotations

import math


def backoff_seconds(tries: int, *, first_seconds: float, most_seconds: float = math.inf) -> float:
    """The wait after `tries` failed tries (1 or more): `first_seconds`, doubled after each
    further failure, never more than `most_seconds`."""
    return min(most_seconds, first_seconds * 2 ** (max(1, tries) - 1))
