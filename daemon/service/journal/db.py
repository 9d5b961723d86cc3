"""The journal file's one connection, and the one lock-and-transaction helper of the stores.

Why SQLite (as huey's storage does): the queue must survive a crash, be readable by
`stylebox status` from another process while the daemon runs, and claim a job atomically. WAL
gives readers that never block the writer, and `BEGIN IMMEDIATE` takes the write lock before the
claim reads anything, so two connections (threads or processes) can never claim the same row.
`synchronous=FULL` because the worker deletes the original photo right after `mark_done` commits:
that commit must be on disk.

The stores (jobs, events, the file memo) share one `Database`, as huey's SQL storages share
`BaseSqlStorage.db()`: a change that touches two of them (a job settled with the event that
reports it) is one transaction, and the watcher and worker threads are serialised by one lock.
"""

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from daemon.errors import JournalDiskError, JournalError, JournalUnusable
from daemon.service.journal.schema import MIGRATIONS, SCHEMA, SCHEMA_VERSION

BUSY_TIMEOUT_SECONDS = 5.0


class Database:
    """One connection to the journal file, its lock, and the clock every store reads time from.

    Time comes from the injected `now`, never from `time` directly, so tests drive backoff with a
    fake clock.
    """

    def __init__(
        self, path: Path, *, now: Callable[[], float] = time.time, readonly: bool = False
    ) -> None:
        """Open (creating the file, not its folder) and check the journal at `path`.

        `readonly` opens an existing journal for `stylebox status` and never creates a file.
        """
        self.path = Path(path)
        self.now = now
        self._readonly = readonly
        self._lock = threading.Lock()
        self._conn = self._connect()
        try:
            with self._errors():
                self._prepare()
        except BaseException:
            self._conn.close()
            raise

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One locked write transaction: the unit every store's writer is made of."""
        with self._lock, self._errors(), self._immediate() as conn:
            yield conn

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """Locked access for reads that need no transaction (a SELECT is atomic on its own in
        autocommit mode)."""
        with self._lock, self._errors():
            yield self._conn

    def close(self) -> None:
        """Close the connection; the last one out checkpoints the WAL into the main file."""
        with self._lock:
            self._conn.close()

    def _connect(self) -> sqlite3.Connection:
        """Open the connection; autocommit mode, because every transaction here is explicit."""
        options: dict[str, Any] = {
            "timeout": BUSY_TIMEOUT_SECONDS,
            "isolation_level": None,
            "check_same_thread": False,
        }
        try:
            if self._readonly:
                if not self.path.is_file():
                    raise JournalError(
                        f"there is no journal at {self.path}; check state_dir, or start the "
                        "daemon once to create it"
                    )
                # mode=ro never creates the database; as_uri() escapes '?' and '#' in the path.
                uri = self.path.absolute().as_uri() + "?mode=ro"
                conn = sqlite3.connect(uri, uri=True, **options)
            else:
                conn = sqlite3.connect(self.path, **options)
        except sqlite3.Error as exc:
            raise self._journal_error(exc, None) or exc from exc
        conn.row_factory = sqlite3.Row
        return conn

    def _prepare(self) -> None:
        """Set the pragmas, create or check the schema, and refuse a damaged file."""
        conn = self._conn
        if self._readonly:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                raise JournalError(
                    f"the journal at {self.path} is empty; start the daemon once to create it"
                )
            self._check_version(version)
            return
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise JournalUnusable(
                f"the journal at {self.path} cannot use write-ahead logging (got {mode!r}); "
                "put state_dir on a local disk"
            )
        conn.execute("PRAGMA synchronous = FULL")
        # IMMEDIATE so two daemons starting at once cannot both create the schema.
        with self._immediate():
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            self._check_version(version)
            if version == 0:
                for statement in SCHEMA:
                    conn.execute(statement)
            for target in range(max(version, 1) + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[target]:
                    conn.execute(statement)
        # The original photo is deleted on the journal's word: refuse to start on a damaged file
        # rather than find out halfway through a job. It reads the whole file, which stays small.
        problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise self._corrupt("; ".join(problems[:3]))

    def _check_version(self, version: int) -> None:
        """Refuse a journal written by a newer stylebox rather than misread it."""
        if version > SCHEMA_VERSION:
            raise JournalUnusable(
                f"the journal at {self.path} has schema version {version}, but this stylebox "
                f"knows only up to {SCHEMA_VERSION}; run the newer stylebox, or move the file "
                "aside to start a fresh journal"
            )

    def _corrupt(self, detail: str) -> JournalUnusable:
        """The one message for a damaged journal, so every path to it gives the same remedy; on one
        line, as every error the CLI prints (SQLite's integrity report spans several)."""
        detail = " ".join(detail.split())
        return JournalUnusable(
            f"the journal at {self.path} is corrupt ({detail}); stop the daemon and move the file "
            "(with its -wal and -shm files) aside to start a fresh journal"
        )

    def _journal_error(
        self, exc: sqlite3.Error, conn: sqlite3.Connection | None
    ) -> JournalError | None:
        """Explain an SQLite error the user can act on; None for the rest (those are bugs).

        `conn`, when there is one, is used to ask `quick_check` what exactly is damaged.
        """
        code = getattr(exc, "sqlite_errorcode", None)
        if code is None:
            return None
        primary = code & 0xFF  # the extended code's low byte is the primary result code
        if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
            detail = str(exc)
            if conn is not None:
                # If it is too damaged even to check, the first error says enough.
                with suppress(sqlite3.Error):
                    detail += "; quick_check: " + "; ".join(
                        row[0] for row in conn.execute("PRAGMA quick_check").fetchmany(3)
                    )
            return self._corrupt(detail)
        if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return JournalError(
                f"the journal at {self.path} stayed locked for over {BUSY_TIMEOUT_SECONDS:g} s "
                f"({exc}); is another stylebox daemon using the same state_dir?"
            )
        if primary in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM):
            return JournalUnusable(
                f"cannot open or write the journal at {self.path} ({exc}); check that its folder "
                "exists and that this user may write there"
            )
        if primary in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR):
            return JournalDiskError(
                f"cannot write the journal at {self.path} ({exc}); check the disk holding it "
                "(full? failing?)"
            )
        return None

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn SQLite errors the user can act on into JournalError."""
        try:
            yield
        except sqlite3.Error as exc:
            raise self._journal_error(exc, self._conn) or exc from exc

    @contextmanager
    def _immediate(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, without the lock (opening holds no other thread yet): the
        write lock is taken before the first read."""
        if self._readonly:
            raise JournalError(f"the journal at {self.path} was opened read-only")
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLite may already have rolled back (e.g. disk full)
                conn.execute("ROLLBACK")
            raise
