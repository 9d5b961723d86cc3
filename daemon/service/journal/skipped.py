"""The files skipped without a job (videos), by path and the version that was looked at.

A video in the inbox (a Live Photo's .MOV beside its .HEIC) is told about once: the row says it
was seen at this size, mtime and ctime, so a rescan or a restart passes it by in one lookup, never
reading it again; a new version of it is looked at anew. Rows go as their files leave the inbox,
as the file memo's do.
"""

from collections.abc import Collection

from daemon.paths import restored, stored
from daemon.service.journal.db import Database
from daemon.service.journal.memo import FileVersion


class SkippedFiles:
    """The `skipped_files` table, over the journal's one connection."""

    def __init__(self, db: Database) -> None:
        """Keep the table over the journal's one connection."""
        self._db = db

    def record(self, path: str, version: FileVersion, kind: str) -> None:
        """Note that the file, as it is now, was skipped as `kind` ("QuickTime video")."""
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO skipped_files (path, size, mtime_ns, ctime_ns, kind, skipped_at)"
                " VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (path) DO UPDATE SET size = excluded.size,"
                " mtime_ns = excluded.mtime_ns, ctime_ns = excluded.ctime_ns,"
                " kind = excluded.kind, skipped_at = excluded.skipped_at",
                (stored(path), *version, kind, self._db.now()),
            )

    def version(self, path: str) -> FileVersion | None:
        """The version of the file at `path` that was skipped, if it was."""
        with self._db.reading() as conn:
            row = conn.execute(
                "SELECT size, mtime_ns, ctime_ns FROM skipped_files WHERE path = ?",
                (stored(path),),
            ).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def count(self) -> int:
        """How many files in the inbox are skipped."""
        with self._db.reading() as conn:
            # `stylebox status` reads a journal of version 3 as it is, until the daemon is
            # restarted on this stylebox and brings it up to date: no table, nothing skipped.
            table = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'skipped_files'"
            ).fetchone()
            if table is None:
                return 0
            return conn.execute("SELECT count(*) FROM skipped_files").fetchone()[0]

    def paths(self) -> list[str]:
        """Every path skipped, so a caller can find those no longer in the inbox."""
        with self._db.reading() as conn:
            return [restored(row[0]) for row in conn.execute("SELECT path FROM skipped_files")]

    def forget(self, paths: Collection[str]) -> None:
        """Drop the rows of files that left the inbox (or are no longer skipped), in one
        transaction."""
        if not paths:
            return
        with self._db.transaction() as conn:
            conn.executemany(
                "DELETE FROM skipped_files WHERE path = ?", [(stored(path),) for path in paths]
            )
