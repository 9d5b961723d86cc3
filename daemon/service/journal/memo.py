"""The file memo: the content hash of each photo kept in the inbox, by path, size and mtime.

Periodic rescans would otherwise re-hash every original kept in the inbox; the memo lets them
skip a file whose size and mtime are as they were when it was hashed.
"""

from collections.abc import Collection

from daemon.paths import restored, stored
from daemon.service.journal.db import Database


class FileMemo:
    """The `files` table, over the journal's one connection."""

    def __init__(self, db: Database) -> None:
        """Keep the memo over the journal's one connection."""
        self._db = db

    def remember(self, path: str, size: int, mtime_ns: int, content_hash: str) -> None:
        """Note the hash of a file as it is now (size and mtime identify the version)."""
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO files (path, size, mtime_ns, content_hash) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (path) DO UPDATE SET size = excluded.size,"
                " mtime_ns = excluded.mtime_ns, content_hash = excluded.content_hash",
                (stored(path), size, mtime_ns, content_hash),
            )

    def known_hash(self, path: str, size: int, mtime_ns: int) -> str | None:
        """The remembered hash, only if the file still has the same size and mtime."""
        with self._db.reading() as conn:
            row = conn.execute(
                "SELECT content_hash FROM files WHERE path = ? AND size = ? AND mtime_ns = ?",
                (stored(path), size, mtime_ns),
            ).fetchone()
        return None if row is None else row[0]

    def paths(self) -> list[str]:
        """Every path the memo holds, so a caller can find those no longer in the inbox."""
        with self._db.reading() as conn:
            return [restored(row[0]) for row in conn.execute("SELECT path FROM files")]

    def forget(self, paths: Collection[str]) -> None:
        """Drop the memo of files that left the inbox, in one transaction: a row per photo ever
        seen would make the table grow for the life of the install."""
        if not paths:
            return
        with self._db.transaction() as conn:
            conn.executemany(
                "DELETE FROM files WHERE path = ?", [(stored(path),) for path in paths]
            )
