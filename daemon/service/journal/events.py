"""The transactional outbox of notify: events, kept in the journal.

An event is inserted in the same transaction as the state change it reports, with one delivery row
per channel it goes to, so a crash can neither lose an event whose change was committed nor send
one whose change was not; the sender then marks each row sent, given up, or pending again.
"""

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from daemon.service.journal.db import Database


@dataclass(frozen=True)
class Event:
    """Something the notify: channels are told; `payload` is the whole event as sent (its id,
    type and time included)."""

    id: str
    type: str
    time: float
    payload: dict[str, Any]


@dataclass(frozen=True)
class Pending:
    """An event still to be delivered to one channel."""

    seq: int
    channel: str
    attempts: int  # tries so far
    event: Event


class DeliveryState(StrEnum):
    """Where one event stands with one channel."""

    PENDING = "pending"
    SENT = "sent"
    GIVEN_UP = "given_up"


class EventStore:
    """The `events` and `deliveries` tables: what happened, and who still has to be told."""

    def __init__(self, db: Database) -> None:
        """Keep events over the journal's one connection."""
        self._db = db
        # Which channels an event of a type goes to (the service sets it from notify:); an
        # event no channel wants is not recorded at all.
        self.routes: Callable[[str], Sequence[str]] = lambda event_type: ()
        self.on_events: Callable[[], None] = lambda: None  # told once events are committed

    def insert(self, conn: sqlite3.Connection, events: Sequence[Event]) -> int:
        """Within an open write transaction (another store's, when the events report its change):
        each event, pending for each channel it goes to; how many were wanted by a channel.

        The caller calls `on_events` once its transaction has committed, if this returned more
        than none: a sender woken earlier could look before the rows are there.
        """
        inserted = 0
        for event in events:
            channels = self.routes(event.type)
            if not channels:
                continue
            added = conn.execute(
                "INSERT OR IGNORE INTO events (id, type, time, payload) VALUES (?, ?, ?, ?)",
                (event.id, event.type, event.time, json.dumps(event.payload)),
            )
            if not added.rowcount:
                continue  # told already (an id made from what it reports: a duplicate's)
            seq = added.lastrowid
            conn.executemany(
                "INSERT INTO deliveries (seq, channel, state, next_try) VALUES (?, ?, ?, ?)",
                [(seq, channel, DeliveryState.PENDING, event.time) for channel in channels],
            )
            inserted += 1
        return inserted

    def record(self, events: Sequence[Event]) -> None:
        """Events that change no job (a duplicate skipped, the daemon started), on their own."""
        with self._db.transaction() as conn:
            inserted = self.insert(conn, events)
        if inserted:
            self.on_events()

    def due(self, channel: str, limit: int = 50) -> list[Pending]:
        """The channel's pending events whose next try is due, oldest first."""
        with self._db.reading() as conn:
            rows = conn.execute(
                "SELECT d.seq, d.attempts, e.id, e.type, e.time, e.payload FROM deliveries d"
                " JOIN events e ON e.seq = d.seq WHERE d.channel = ? AND d.state = ?"
                " AND d.next_try <= ? ORDER BY d.seq LIMIT ?",
                (channel, DeliveryState.PENDING, self._db.now(), limit),
            ).fetchall()
        return [
            Pending(
                row["seq"],
                channel,
                row["attempts"],
                Event(row["id"], row["type"], row["time"], json.loads(row["payload"])),
            )
            for row in rows
        ]

    def abandon_channels_but(self, channels: Sequence[str]) -> int:
        """Give up the pending events of every channel not in `channels` (one taken out of the
        config, or a webhook whose URL changed): nothing would ever deliver them."""
        # The kept channels go in as one JSON array, so the statement is the same for any number.
        with self._db.transaction() as conn:
            return conn.execute(
                "UPDATE deliveries SET state = ?, done_at = ?, error = ? WHERE state = ?"
                " AND channel NOT IN (SELECT value FROM json_each(?))",
                (
                    DeliveryState.GIVEN_UP,
                    self._db.now(),
                    "the channel is no longer in notify:",
                    DeliveryState.PENDING,
                    json.dumps(list(channels)),
                ),
            ).rowcount

    def next_try(self, channel: str) -> float | None:
        """When the channel's next pending event is due, if it has one."""
        with self._db.reading() as conn:
            return conn.execute(
                "SELECT MIN(next_try) FROM deliveries WHERE channel = ? AND state = ?",
                (channel, DeliveryState.PENDING),
            ).fetchone()[0]

    def last_delivered(self, channel: str) -> float | None:
        """When the channel last had an event delivered: a digest channel sends again once its
        interval has passed since then, so this is its clock."""
        with self._db.reading() as conn:
            return conn.execute(
                "SELECT MAX(done_at) FROM deliveries WHERE channel = ? AND state = ?",
                (channel, DeliveryState.SENT),
            ).fetchone()[0]

    def settle(
        self,
        pending: Sequence[Pending],
        state: DeliveryState,
        error: str | None,
        next_try: float | None,
    ) -> None:
        """After a try: delivered (sent), given up, or pending again from `next_try` (now if
        None); `error` is why the try failed, if it did."""
        now = self._db.now()
        done_at = None if state is DeliveryState.PENDING else now
        with self._db.transaction() as conn:
            conn.executemany(
                "UPDATE deliveries SET state = ?, attempts = attempts + 1, done_at = ?,"
                " error = ?, next_try = ? WHERE channel = ? AND seq = ?",
                [
                    (state, done_at, error, next_try or now, item.channel, item.seq)
                    for item in pending
                ],
            )

    def delivery_counts(self) -> dict[str, dict[str, Any]]:
        """Per channel: how many events are pending, sent and given up, and the last error of
        one still pending (for `stylebox status`); {} for a journal older than events."""
        found: dict[str, dict[str, Any]] = {}
        with self._db.reading() as conn:
            try:
                rows = conn.execute(
                    "SELECT channel, state, COUNT(*) AS n FROM deliveries GROUP BY channel, state"
                ).fetchall()
            except sqlite3.OperationalError:  # version 1: no deliveries table
                return {}
            for row in rows:
                counts = found.setdefault(row["channel"], dict.fromkeys(map(str, DeliveryState), 0))
                counts[row["state"]] = row["n"]
            for channel, counts in found.items():
                last = conn.execute(
                    "SELECT error FROM deliveries WHERE channel = ? AND state = ?"
                    " AND error IS NOT NULL ORDER BY seq DESC LIMIT 1",
                    (channel, DeliveryState.PENDING),
                ).fetchone()
                counts["last_error"] = last[0] if last else None
        return found

    def prune(self, before: float) -> int:
        """Forget events older than `before` that no channel still waits for; how many."""
        # Their deliveries first, as they point at the events; the second statement then finds
        # the same events, since no pending delivery was among those deleted.
        with self._db.transaction() as conn:
            conn.execute(
                "DELETE FROM deliveries WHERE seq IN (SELECT seq FROM events WHERE time < ?"
                " AND seq NOT IN (SELECT seq FROM deliveries WHERE state = ?))",
                (before, DeliveryState.PENDING),
            )
            return conn.execute(
                "DELETE FROM events WHERE time < ?"
                " AND seq NOT IN (SELECT seq FROM deliveries WHERE state = ?)",
                (before, DeliveryState.PENDING),
            ).rowcount
