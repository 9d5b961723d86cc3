"""The file memo: the content hash of each photo kept in the inbox, by path, size, mtime and
ctime.

Periodic rescans would otherwise re-hash every original kept in the inbox; the memo lets them
skip a file whose size, mtime and ctime are as they were when it was hashed (the ctime, because
`cp -p` replaces bytes keeping the size and mtime, and nothing can set a ctime back).
"""

import os
from collections.abc import Collection

from daemon.paths import restored, stored
from daemon.service.journal.db import Database

FileVersion = tuple[int, int, int]  # (size, mtime_ns, ctime_ns) of one version of a file


def version_of(info: os.stat_result) -> FileVersion:
    """Which version of a file a stat shows."""
    return info.st_size, info.st_mtime_ns, info.st_ctime_ns


class FileMemo:
    """The `files` table, over the journal's one connection."""

    def __init__(self, db: Database) -> None:
        """Keep the memo over the journal's one connection."""
        self._db = db

    def remember(self, path: str, version: FileVersion, content_hash: str) -> None:
        """Note the hash of a file as it is now (`version`: its size, mtime and ctime)."""
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO files (path, size, mtime_ns, ctime_ns, content_hash)"
                " VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (path) DO UPDATE SET size = excluded.size,"
                " mtime_ns = excluded.mtime_ns, ctime_ns = excluded.ctime_ns,"
                " content_hash = excluded.content_hash",
                (stored(path), *version, content_hash),
            )

    def known_hash(self, path: str, version: FileVersion) -> str | None:
        """The remembered hash, only if the file is still the same version."""
        with self._db.reading() as conn:
            row = conn.execute(
                "SELECT content_hash FROM files"
                " WHERE path = ? AND size = ? AND mtime_ns = ? AND ctime_ns = ?",
                (stored(path), *version),
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
