"""Delivers the journal's pending events, one thread per channel, so the worker never waits
for a receiver and a receiver that hangs delays only its own channel, by its timeout.

A try that fails is tried again after a growing wait (5 s, 10 s, ... up to an hour), across
restarts (the wait is in the journal); a receiver that has refused an event until it is
`give_up_after_hours` old is given up on (the events log never: a full disk holds its events
back until there is room). Events of a channel taken out of the config are given up. An event
is marked delivered only after its channel said so: a crash in between delivers it again, so
receivers see each event at least once and de-duplicate by its id.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from loguru import logger

from daemon.service.backoff import backoff_seconds
from daemon.service.channels import Channel, Outcome
from daemon.service.journal import DeliveryState, Journal, Pending

FIRST_RETRY_SECONDS = 5.0
LAST_RETRY_SECONDS = 3600.0
IDLE_SECONDS = 1.0  # how often an idle channel looks for new events, if not woken
PRUNE_EVERY_SECONDS = 3600.0
KEEP_EVENTS_SECONDS = 7 * 24 * 3600.0  # delivered events stay this long, for `status`
ROUND = 50  # pending events read at a time
DIGEST_ROUND = 100_000  # a digest takes every due event


class Sender:
    """The channels' threads."""

    def __init__(
        self,
        journal: Journal,
        channels: Sequence[Channel],
        *,
        give_up_after_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.journal = journal
        self.channels = list(channels)
        self.give_up_after = give_up_after_seconds
        self.clock = clock
        self._stop = threading.Event()
        self._wake = {channel.name: threading.Event() for channel in self.channels}
        self._threads = [
            threading.Thread(target=self._run, args=(channel,), name=f"notify {channel.name}")
            for channel in self.channels
        ]
        for thread in self._threads:
            thread.daemon = True  # a receiver that hangs must not hold up the daemon's exit

    def routes(self, event_type: str) -> tuple[str, ...]:
        """The channels an event of this type goes to (Journal.event_routes)."""
        return tuple(c.name for c in self.channels if event_type in c.events)

    def start(self) -> None:
        """Deliver from now on, what an earlier run left pending first."""
        dropped = self.journal.abandon_channels_but([channel.name for channel in self.channels])
        if dropped:
            logger.warning("{} event(s) for channels no longer in notify: given up", dropped)
        for thread in self._threads:
            thread.start()

    def wake(self) -> None:
        """Events were recorded: look now, not at the next idle round."""
        for event in self._wake.values():
            event.set()

    def stop(self, timeout: float) -> None:
        """Stop after the tries under way, waiting `timeout` at most for all of them; what is
        left is delivered at the next start."""
        self._stop.set()
        self.wake()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _run(self, channel: Channel) -> None:
        pruned_at = 0.0
        while not self._stop.is_set():
            try:
                if (
                    channel is self.channels[0]
                    and time.monotonic() - pruned_at > PRUNE_EVERY_SECONDS
                ):
                    pruned_at = time.monotonic()
                    self.journal.prune_events(self.clock() - KEEP_EVENTS_SECONDS)
                if not self._round(channel):
                    self._idle(channel)
            except Exception as exc:  # the journal failing, a bug: the worker will say more
                if self._stop.is_set():
                    return  # the journal closed under a delivery that outlasted the stop
                logger.opt(exception=exc).error("{}: cannot deliver events: {}", channel.label, exc)
                self._stop.wait(IDLE_SECONDS * 10)

    def _idle(self, channel: Channel) -> None:
        wake = self._wake[channel.name]
        due = self.journal.next_try(channel.name)
        wait = IDLE_SECONDS if due is None else min(IDLE_SECONDS, max(0.0, due - self.clock()))
        wake.wait(wait)
        wake.clear()

    def _round(self, channel: Channel) -> bool:
        """Try what is due; False when nothing was."""
        limit = DIGEST_ROUND if channel.digest_seconds else ROUND
        due = self.journal.due(channel.name, limit=limit)
        if not due:
            return False
        now = self.clock()
        expired = [
            item
            for item in due
            if channel.expires and item.attempts and now - item.event.time > self.give_up_after
        ]
        if expired:
            self._give_up(channel, expired, "too old: its receiver did not take it in time")
        due = [item for item in due if item not in expired]
        if channel.digest_seconds:
            last = self.journal.last_delivered(channel.name)
            if last is not None and now - last < channel.digest_seconds:
                self._stop.wait(min(IDLE_SECONDS * 10, channel.digest_seconds - (now - last)))
                return True
            if due:
                self._try(channel, due)
            return True
        for item in due:
            if self._stop.is_set():
                break
            self._try(channel, [item])
        return True

    def _try(self, channel: Channel, items: list[Pending]) -> None:
        try:
            outcome = channel.deliver([item.event for item in items])
        except Exception as exc:  # a channel's bug or a library's surprise: a failed try
            outcome = Outcome(DeliveryState.PENDING, f"{type(exc).__name__}: {exc}")
        if outcome.state is DeliveryState.SENT:
            self.journal.settle(items, DeliveryState.SENT, error=None)
        elif outcome.state is DeliveryState.GIVEN_UP:
            self._give_up(channel, items, outcome.detail)
        else:
            attempts = max(item.attempts for item in items) + 1
            wait = backoff_seconds(
                attempts, first_seconds=FIRST_RETRY_SECONDS, most_seconds=LAST_RETRY_SECONDS
            )
            self.journal.settle(
                items, DeliveryState.PENDING, error=outcome.detail, next_try=self.clock() + wait
            )
            logger.info(
                "{}: {} (try {}); trying again in {:g} s",
                channel.label,
                outcome.detail,
                attempts,
                wait,
            )

    def _give_up(self, channel: Channel, items: list[Pending], why: str) -> None:
        self.journal.settle(items, DeliveryState.GIVEN_UP, error=why)
        for item in items:
            logger.warning(
                "{}: gave up on event {} ({}): {}",
                channel.label,
                item.event.id,
                item.event.type,
                why,
            )
