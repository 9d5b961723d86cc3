"""From a settled file in the inbox to a queued job: route it, hash it, record it once.

Called by the watcher's settle thread (never by the observer's event callback), so hashing here
never delays event delivery. Duplicates — the same bytes for the same preset version, under any
name — are recognised here and never queued twice. Videos (a Live Photo's .MOV) are told from
photos by their first bytes, before anything is hashed, and skipped: said once, left in place.
A photo in a folder for a painting that is not a preset (yet, or any more) waits in place: said
once, and offered again after each reload (`offer_waiting`).
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from loguru import logger

from daemon.config import Config
from daemon.config.paintings import waiting_for, waiting_reason
from daemon.media import decode
from daemon.media.files import sha256_file
from daemon.media.videos import described, video_kind
from daemon.outbox import Outbox, OutsideOutbox, open_outbox
from daemon.service import events
from daemon.service.journal import FileVersion, Job, JobState, Journal, version_of


def dispose_original(config: Config, journal: Journal, outbox: Outbox, path: Path) -> Path | None:
    """The originals policy applied to a photo whose result is safe (by the worker, or here for a
    duplicate); the new path on move. Its memo row goes as it leaves the inbox: a stale row could
    hand its hash to a new file at that path with the same size and mtime (the rescan's prune
    catches every other way out)."""
    moved = outbox.dispose_original(path, config.originals.policy, config.originals_dir)
    if config.originals.policy != "keep":
        journal.forget_files([str(path)])
    return moved


class Intake:
    """Turns ready files into journal rows; `config` may be swapped on reload."""

    def __init__(self, config: Config, journal: Journal, on_queued: Callable[[], None]) -> None:
        self.config = config
        self.journal = journal
        self.on_queued = on_queued
        # One file at a time: the watcher's thread hands them over, the main loop's reload
        # offers the waiting ones again.
        self._lock = threading.Lock()
        self._waiting: dict[Path, tuple[str, FileVersion]] = {}  # -> the painting, as it was

    def is_ready(self, path: Path) -> bool:
        """What the watcher asks of a file that has stopped changing before handing it over: a
        whole photo (decode.is_whole), or a video, which is skipped as it is: its wholeness is not
        for a photo decoder to judge, and a "not yet" would hold it back for stalled_seconds."""
        if video_kind(path) is not None:
            return True
        return decode.is_whole(path, max_pixels=self.config.max_input_pixels)

    def accept(self, path: Path) -> None:
        """Handle one file the watcher found ready (or one that is not a regular file at all)."""
        try:
            with self._lock:
                self._waiting.pop(path, None)
                self._accept(path)
        except OutsideOutbox as exc:  # failed/ or originals/ linked away: leave it, as the worker
            logger.error("{}: {}; left in the inbox", path.name, exc)

    def take(self, path: Path) -> Job | None:
        """A file known to be whole (an upload, written and renamed into the inbox) taken at
        once instead of after the watcher's settling: its job, new or the one it repeats (None
        if it was not queued). The watcher still comes across it; the journal makes that a
        no-op. Raises OutsideOutbox as the worker would meet it."""
        with self._lock:
            return self._accept(path)

    def _accept(self, path: Path) -> Job | None:
        config = self.config
        outbox = open_outbox(config)
        try:
            info = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            return None  # gone before we got to it: nothing to do
        if not stat.S_ISREG(info.st_mode):
            # Symlinks are never followed out of the inbox; FIFOs and devices are never opened.
            kind = "a symlink" if stat.S_ISLNK(info.st_mode) else "not a regular file"
            self._quarantine(outbox, path, f"{path.name}: {kind}; only regular files are taken")
            return None
        relative = PurePosixPath(path.relative_to(config.inbox).as_posix())
        # A photo hashed at this version is not read again to see whether it is a video.
        known_hash = self.journal.known_hash(str(path), version_of(info))
        if known_hash is None and self._skipped(path, relative, version_of(info)):
            return None
        painting = waiting_for(config, relative)
        if painting is not None:
            logger.info("{}: {}; left in place", relative, waiting_reason(config, painting))
            self._waiting[path] = (painting, version_of(info))
            return None
        preset_name = config.routing.preset_for(relative, config.presets)
        if preset_name is None:
            if config.routing.unmatched == "quarantine":
                self._quarantine(outbox, path, f"{relative}: no routing rule matches it")
            else:
                logger.info("{}: no routing rule matches it; left in place", relative)
            return None
        preset = config.presets[preset_name]
        content_hash = known_hash
        if content_hash is None:
            content_hash = sha256_file(path)
            self.journal.remember_file(str(path), version_of(info), content_hash)
        added = self.journal.add(content_hash, preset_name, preset.fingerprint, str(path))
        job = added.job
        if added.created:
            logger.bind(job=job.id).info("queued {} for preset {}", relative, preset_name)
            self.on_queued()
        elif self._followed(job, path, relative):
            return job
        elif job.state is JobState.QUARANTINED:
            self._quarantine(
                outbox,
                path,
                f"{relative}: same photo as job {job.id}, quarantined before: {job.error}",
                job,
            )
        elif job.source_path != str(path):
            logger.bind(job=job.id).info(
                "{}: duplicate of {} (job {}, {}); not processed again",
                relative,
                Path(job.source_path).name,
                job.id,
                job.state,
            )
            self.journal.record_events([events.photo_duplicate(config, path, job)])
            if job.state is JobState.DONE or config.originals.policy == "move":
                dispose_original(config, self.journal, outbox, path)
        elif job.state is JobState.DONE:
            # Its own original, still here after a crash between mark_done and the move.
            dispose_original(config, self.journal, outbox, path)
        return job

    def offer_waiting(self) -> None:
        """Take each photo that waited for a painting that is a preset now (after a reload), as
        the watcher handed it over; one changed or gone since is left to the watcher."""
        with self._lock:
            waiting = list(self._waiting.items())
        for path, (_, version) in waiting:
            try:
                still = version_of(os.stat(path, follow_symlinks=False)) == version
            except OSError:
                still = False
            relative = PurePosixPath(path.relative_to(self.config.inbox).as_posix())
            if not still:
                with self._lock:
                    self._waiting.pop(path, None)
            elif waiting_for(self.config, relative) is None:
                self.accept(path)

    def _skipped(self, path: Path, relative: PurePosixPath, version: FileVersion) -> bool:
        """Whether the file is a video, which is skipped: said once per version of it (a rescan
        or a restart passes it by on its journal row, reading nothing), never hashed, left in
        the inbox."""
        skipped = self.journal.skipped_version(str(path))
        if skipped == version:
            return True
        kind = video_kind(path)
        if kind is None:
            if skipped is not None:  # a video once, now something else at the same path
                self.journal.forget_skipped([str(path)])
            return False
        logger.info("{}: {}, not a photo; skipped", relative, described(kind))
        self.journal.skip_file(str(path), version, kind)
        return True

    def _followed(self, job: Job, path: Path, relative: PurePosixPath) -> bool:
        """Whether this file is the unfinished job's photo, renamed or moved inside the inbox
        since it was queued (its old name is gone): the job follows it, nothing is queued or
        disposed of twice."""
        if job.state not in (JobState.QUEUED, JobState.RUNNING) or job.source_path == str(path):
            return False
        if os.path.lexists(job.source_path) or not self.journal.move_source(job.id, str(path)):
            return False
        self.journal.forget_files([job.source_path])
        logger.bind(job=job.id).info(
            "{}: {} was moved here; its job follows it", relative, Path(job.source_path).name
        )
        return True

    def forget_gone_files(self) -> int:
        """Drop the hash memo, and the rows of skipped videos, of files no longer in the inbox
        (deleted or moved by hand); how many. After a complete scan: a file that comes back
        later is only hashed (or looked at) again."""
        gone = [path for path in self.journal.remembered_paths() if not os.path.lexists(path)]
        self.journal.forget_files(gone)
        gone_skipped = [path for path in self.journal.skipped_paths() if not os.path.lexists(path)]
        self.journal.forget_skipped(gone_skipped)
        with self._lock:
            for path in [path for path in self._waiting if not os.path.lexists(path)]:
                del self._waiting[path]
        return len(gone) + len(gone_skipped)

    def _quarantine(self, outbox: Outbox, path: Path, reason: str, job: Job | None = None) -> None:
        # told first: a crash after the move would leave the photo in failed/, never offered
        # again, and its event unsaid; the other way round costs one event told twice at most
        given_up = events.photo_given_up(self.config, job, path, reason, kind="quarantined")
        self.journal.record_events([given_up])
        outbox.quarantine(path, {"reason": reason})
        logger.warning("quarantined: {}", reason)
