"""Delivers the journal's pending events, one thread per channel, so the worker never waits
for a receiver and a receiver that hangs delays only its own channel, by its timeout.

A failed try puts the channel, not the event, in an outage: its events wait together, and one
of them is tried again after a growing wait (5 s, 10 s, ... up to the channel's
`most_retry_seconds`). The outage is one log line when it starts and one when the channel
delivers again, however many events and tries it held; once a try gets through, the events
held back go at once, in order, instead of each at the end of a backoff of its own. A receiver
that has refused a channel's events until one is `give_up_after_hours` old gives that one up
(the events log never: a full disk holds its events back until there is room). Events of a
channel taken out of the config are given up. An event is marked delivered only after its
channel said so: a crash in between delivers it again, so receivers see each event at least
once and de-duplicate by its id.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from loguru import logger

from daemon.service.backoff import backoff_seconds
from daemon.service.channels import Channel, Outcome
from daemon.service.journal import DeliveryState, Journal, Pending

FIRST_RETRY_SECONDS = 5.0
IDLE_SECONDS = 1.0  # how often an idle channel looks for new events, if not woken
PRUNE_EVERY_SECONDS = 3600.0
KEEP_EVENTS_SECONDS = 7 * 24 * 3600.0  # delivered events stay this long, for `status`
ROUND = 50  # pending events read at a time
DIGEST_ROUND = 100_000  # a digest takes every due event


@dataclass
class Outage:
    """A channel whose last try failed: `tries` in a row since `since`, the next at `next_try`
    (all on the Sender's clock)."""

    since: float
    tries: int
    next_try: float


class Sender:
    """The channels' threads."""

    def __init__(
        self,
        journal: Journal,
        channels: Sequence[Channel],
        *,
        give_up_after_seconds: float,
        first_retry_seconds: float = FIRST_RETRY_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.journal = journal
        self.channels = list(channels)
        self.give_up_after = give_up_after_seconds
        self.first_retry_seconds = first_retry_seconds
        self.clock = clock
        self._outages: dict[str, Outage] = {}  # by channel name; each written by its own thread
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
        outage, now = self._outages.get(channel.name), self.clock()
        if outage is not None and outage.next_try > now:
            due: float | None = outage.next_try
        else:
            due = self.journal.next_try(channel.name)
        wait = IDLE_SECONDS if due is None else min(IDLE_SECONDS, max(0.0, due - now))
        wake.wait(wait)
        wake.clear()

    def _round(self, channel: Channel) -> bool:
        """Try what is due; False when nothing was (or the channel waits out an outage)."""
        outage = self._outages.get(channel.name)
        now = self.clock()
        if outage is not None and now < outage.next_try:
            return False  # new events wait with the others, not a try each
        limit = DIGEST_ROUND if channel.digest_seconds else ROUND
        due = self.journal.due(channel.name, limit=limit)
        if not due:
            return False
        # In an outage every event of the channel is refused, tried or not.
        expired = [
            item
            for item in due
            if channel.expires
            and (item.attempts or outage is not None)
            and now - item.event.time > self.give_up_after
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
        if outage is not None:
            due = due[:1]  # one event asks whether the receiver is back; the rest wait for it
        for item in due:
            if self._stop.is_set() or not self._try(channel, [item]):
                break  # a failed try: the rest wait for the outage's next try
        return True

    def _try(self, channel: Channel, items: list[Pending]) -> bool:
        """Deliver `items` in one try; whether the channel answered (delivered or refused)."""
        try:
            outcome = channel.deliver([item.event for item in items])
        except Exception as exc:  # a channel's bug or a library's surprise: a failed try
            outcome = Outcome(DeliveryState.PENDING, f"{type(exc).__name__}: {exc}")
        if outcome.state is DeliveryState.PENDING:
            self._failed(channel, items, outcome.detail)
            return False
        if outcome.state is DeliveryState.SENT:
            self.journal.settle(items, DeliveryState.SENT, error=None, next_try=None)
        else:
            self._give_up(channel, items, outcome.detail)
        if (outage := self._outages.pop(channel.name, None)) is not None:
            waiting = self.journal.delivery_counts().get(channel.name, {}).get("pending", 0)
            logger.info(
                "{}: delivering again after {:.0f} s and {} failed tries; {} event(s) were waiting",
                channel.label,
                self.clock() - outage.since,
                outage.tries,
                waiting + len(items),
            )
        return True

    def _failed(self, channel: Channel, items: list[Pending], detail: str) -> None:
        """A try failed: the channel's outage starts (one log line) or goes on (none)."""
        now = self.clock()
        outage = self._outages.get(channel.name) or Outage(since=now, tries=0, next_try=now)
        outage.tries += 1
        wait = backoff_seconds(
            outage.tries,
            first_seconds=self.first_retry_seconds,
            most_seconds=channel.most_retry_seconds,
        )
        outage.next_try = now + wait
        self.journal.settle(items, DeliveryState.PENDING, error=detail, next_try=outage.next_try)
        if outage.tries == 1:
            self._outages[channel.name] = outage
            logger.warning(
                "{}: {}; its events wait, and one is tried again in {:g} s, then less often "
                "(at most {:g} s apart); `stylebox status` shows the last try",
                channel.label,
                detail,
                wait,
                channel.most_retry_seconds,
            )

    def _give_up(self, channel: Channel, items: list[Pending], why: str) -> None:
        self.journal.settle(items, DeliveryState.GIVEN_UP, error=why, next_try=None)
        if len(items) == 1:
            event = items[0].event
            label = channel.label
            logger.warning("{}: gave up on event {} ({}): {}", label, event.id, event.type, why)
        else:
            logger.warning(
                "{}: gave up on {} events ({} .. {}): {}",
                channel.label,
                len(items),
                items[0].event.id,
                items[-1].event.id,
                why,
            )
