"""Share faults: what a NAS share does to the inbox and outbox, against the real daemon.

    python -m bench.share_faults [--cases 1,2,...] [--photos 8] [--against DIR]
                                 [--workdir DIR] [--out bench/results]

Issue 23: a share is not a local disk. An SMB client sets a file's final size before it fills it,
sync tools rename and delete queued photos, the outbox fills up or is unmounted, names come in
any byte string, copies stall, and the inbox folder itself comes and goes. Each case below runs
the real daemon (`python -m daemon run`) as a subprocess on its own folders, with a fresh daemon,
tiny photos (64x48) and a tiny preset (40 px, 4 steps), `watch.settle_seconds` 1 (case 1: 2)
and a rescan every 2 s, and puts it through one fault:

1. preallocated writes (final size first, half the bytes, fsync, a pause of twice the settle
   time, the rest), one file after another, of BMP, uncompressed TIFF, PNG and JPEG: native
   watching with originals moved, polling with originals moved, native watching with originals
   kept; the settle time here is 2 s, the issue's, so that a job fits in the pause;
2. queued photos (the worker paused by the file state_dir/paused) renamed, moved into a
   subfolder and deleted, then the worker resumed, and once the deleted photo's job is over,
   its bytes dropped again under another name (a new photo, to be painted);
3. the outbox a 48 MB tmpfs, filled to ENOSPC while photos are dropped, freed after 10 s;
4. the outbox tmpfs unmounted (`umount -l`) while photos are dropped, and a new one mounted 10 s
   later: nothing may be written under the bare mount point;
5. names that are not valid UTF-8, names with a newline, and a newline that would forge a log line;
6. copies that stall for longer than five times the settle time, then finish;
7. the inbox folder removed and recreated while the daemon runs, photos dropped after.

Cases 3 and 4 mount, so they need root; elsewhere they are skipped with the reason printed.

Each case then waits, up to a minute after its fault is gone, for every photo to be settled (a
result, or failed/ with a reason; out of the inbox unless originals are kept; no job queued or
running) and for that to hold for a few seconds more (a second result would come then), stops
the daemon and counts, per photo and per result:

- lost: a photo that was dropped and not deliberately deleted, with no result from its final
  content, not in failed/ with a reason, and not stuck (so a photo painted only from half of
  itself and then moved away is lost; its result is also partial and corrupt);
- doubled: a content with more than one result in the preset folder;
- partial: a result whose sidecar's input_sha256 is no complete content dropped in the case;
- corrupt: a result whose input_sha256 is not the final content of the photo it is named after;
- stuck: a photo still queued or running, or still in the inbox (unless painted under originals
  kept), at the end; plus queued or running jobs for contents that belong to no photo;
- failed: photos in failed/ with a reason (a verdict, not a loss; shown to tell them apart).

An older daemon may create the roots itself, refuse a case or exit during one: what happened
(exit code, counts) is recorded and every wait is bounded, so the bench never hangs on it.
`--against DIR` runs another checkout's daemon (PYTHONPATH=DIR) on the same cases, so a change
can be measured before and after. Prints a table and the notes of each case, writes
share_faults_<UTC stamp>.json with the figures and the machine; exits 1 when any of lost,
doubled, partial, corrupt or stuck is not 0.
"""

from __future__ import annotations

import argparse
import errno
import functools
import hashlib
import itertools
import json
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal

from bench.share_faults_writers import (
    EXTENSIONS,
    FORMATS,
    PHOTO_SIZE,
    encode,
    run_writers,
    write_preallocated,
    write_stalled,
    write_whole,
)
from tests.daemon_harness import START_SECONDS, Daemon, daemon_env, tiny_preset, write_config

REPO = Path(__file__).resolve().parents[1]
PRESET = "swirl"
SETTLE_SECONDS = 1.0
# Case 1's settle time, the issue's: the daemon must be able to take a half-written file and
# paint it within the writer's pause (twice the settle time) for a partial result to show.
PREALLOCATED_SETTLE_SECONDS = 2.0
RESCAN_SECONDS = 2.0
POLL_INTERVAL_SECONDS = 0.25  # watch.poll_interval_seconds, for the poll-mode runs
DEADLINE_SECONDS = 60.0  # after the fault is gone, every photo must be settled within this
# Settled must hold for a settle time and this long before the count: a second result for one
# photo, or a job for content the daemon has only just seen, comes within a rescan or two.
QUIET_SECONDS = 2 * RESCAN_SECONDS
STOP_SECONDS = 20.0  # SIGTERM, then SIGKILL
QUEUED_SECONDS = 30.0  # case 2: the dropped photos must be queued within this
FULL_SECONDS = 10.0  # case 3: how long the outbox stays full with photos waiting
GONE_SECONDS = 10.0  # case 4: how long the outbox share stays away with photos waiting
TMPFS_SIZE = "48m"
STALL_SECONDS = 5 * SETTLE_SECONDS + 1.0  # case 6: longer than five settle times
FORGED_LOG_LINE = "2026-01-01 00:00:00 ERROR journal corrupt"  # case 5: a newline's payload
PAUSE_NAME = "paused"  # daemon.service.pause.PAUSE_NAME, by value: an older daemon reads the same
JOURNAL_NAME = "journal.sqlite3"
ERROR_SUFFIX = ".error.json"
WRITERS_SECONDS = 60.0  # a writer still writing after this is reported, not waited for


# -- photos and figures ----------------------------------------------------------------------


def sha256(data: bytes) -> str:
    """Hex sha256 of some bytes."""
    return hashlib.sha256(data).hexdigest()


@dataclass
class Photo:
    """One photo a case drops: its final path below the inbox, its final content and every
    file name it had (a sidecar names its source by file name, and renamed photos had two)."""

    relative: str  # str with surrogate escapes where the name is not UTF-8
    sha256: str
    names: set[str] = field(default_factory=set)
    deleted: bool = False  # deliberately deleted: expected gone, never lost

    @classmethod
    def dropped(cls, relative: str, data: bytes) -> Photo:
        """A photo about to be written at `relative` with `data`."""
        return cls(relative, sha256(data), {Path(relative).name})

    def moved(self, relative: str) -> None:
        """The photo now lives at `relative` (a rename or a move inside the inbox)."""
        self.relative = relative
        self.names.add(Path(relative).name)


@dataclass
class CaseResult:
    """One case's (or one run of a case's) figures, and what else was seen, in words."""

    case: int
    label: str
    photos: int = 0  # dropped, deliberately deleted ones included
    deleted: int = 0
    lost: int = 0
    doubled: int = 0
    partial: int = 0
    corrupt: int = 0
    stuck: int = 0
    failed: int = 0
    results: int = 0
    ready: bool = False
    exit_code: int | None = None
    exited_early: bool = False  # the daemon exited on its own before the case was done
    killed: bool = False  # it did not stop within STOP_SECONDS of SIGTERM
    settled_seconds: float | None = None  # after the fault was gone, for good; None: never
    bare_writes: int | None = None  # case 4: files written under the bare mount point
    forged_log_lines: int | None = None  # case 5: log lines a file name wrote
    tracebacks: int = 0  # in the daemon's stderr
    seconds: float = 0.0
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def bad(self) -> int:
        """The sum of the figures that must be 0."""
        return self.lost + self.doubled + self.partial + self.corrupt + self.stuck


@dataclass(frozen=True)
class Result:
    """One result in the preset folder: its image's stem and what its sidecar says."""

    stem: str
    source: str | None
    input_sha256: str | None


@dataclass(frozen=True)
class Snapshot:
    """What the folders and the journal hold at one moment, as a user looking in would see."""

    results: list[Result]
    images_without_sidecar: list[str]
    failed: list[tuple[str, str, bool]]  # name in failed/, its sha256, whether it has a reason
    inbox: dict[str, list[str]]  # sha256 -> paths below the inbox
    jobs: list[tuple[str, str]]  # (content_hash, state) per journal row
    journal_error: str | None


# -- looking in ------------------------------------------------------------------------------


def _file_sha256(path: Path) -> str | None:
    try:
        return sha256(path.read_bytes())
    except OSError:
        return None  # gone or unreadable between the listing and the read


def read_results(folder: Path) -> tuple[list[Result], list[str]]:
    """The results in a preset folder (an image with its sidecar) and images with no sidecar."""
    try:
        files = [p for p in folder.iterdir() if not p.name.startswith(".")]
    except OSError:
        return [], []
    sidecars = {p.stem: p for p in files if p.suffix == ".json"}
    images = {p.stem for p in files if p.suffix != ".json"}
    results = []
    for stem in sorted(images & sidecars.keys()):
        try:
            document = json.loads(sidecars[stem].read_bytes())
        except (OSError, ValueError):
            document = {}
        if not isinstance(document, dict):
            document = {}
        source, content = document.get("source"), document.get("input_sha256")
        results.append(
            Result(
                stem,
                source if isinstance(source, str) else None,
                content if isinstance(content, str) else None,
            )
        )
    return results, sorted(images - sidecars.keys())


def read_failed(folder: Path) -> list[tuple[str, str, bool]]:
    """The photos in failed/: name, sha256 and whether an error file gives a reason."""
    try:
        names = [p.name for p in folder.iterdir()]
    except OSError:
        return []
    found = []
    for name in sorted(names):
        if name.endswith(ERROR_SUFFIX) or name.startswith("."):
            continue
        content = _file_sha256(folder / name)
        if content is None:
            continue
        try:
            document = json.loads((folder / (name + ERROR_SUFFIX)).read_bytes())
            reason = isinstance(document, dict) and bool(document.get("reason"))
        except (OSError, ValueError):
            reason = False
        found.append((name, content, reason))
    return found


def read_inbox(inbox: Path) -> dict[str, list[str]]:
    """The files below the inbox by content (dotfiles, the daemon's own, left out)."""
    found: dict[str, list[str]] = {}
    for folder, folders, names in os.walk(inbox):
        folders[:] = [name for name in folders if not name.startswith(".")]
        for name in names:
            if name.startswith("."):
                continue
            path = Path(folder, name)
            content = _file_sha256(path)
            if content is not None:
                found.setdefault(content, []).append(path.relative_to(inbox).as_posix())
    return found


def read_jobs(journal: Path) -> tuple[list[tuple[str, str]], str | None]:
    """(content_hash, state) of every job, read only: the daemon keeps WAL, so this never
    blocks it; a journal not there yet reads as no jobs. The second value: why it could not
    be read, if it could not."""
    if not journal.is_file():
        return [], None
    try:
        conn = sqlite3.connect(journal.absolute().as_uri() + "?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as error:
        return [], str(error)
    try:
        conn.text_factory = bytes  # a name that is not UTF-8 must not stop the read
        rows = conn.execute("SELECT content_hash, state FROM jobs").fetchall()
        return [(h.decode("ascii", "replace"), s.decode("ascii", "replace")) for h, s in rows], None
    except sqlite3.Error as error:
        if "no such table" in str(error):
            return [], None
        return [], str(error)
    finally:
        conn.close()


def files_below(folder: Path) -> list[str]:
    """Every file (not folder) below `folder`, as paths relative to it."""
    return sorted(
        Path(root, name).relative_to(folder).as_posix()
        for root, _, names in os.walk(folder)
        for name in names
    )


# -- counting --------------------------------------------------------------------------------


@dataclass
class Figures:
    """The counts of one snapshot against the photos of a case."""

    lost: int = 0
    doubled: int = 0
    partial: int = 0
    corrupt: int = 0
    stuck: int = 0
    failed: int = 0
    results: int = 0
    notes: list[str] = field(default_factory=list)


def count(snapshot: Snapshot, photos: list[Photo], policy: str) -> Figures:
    """lost, doubled, partial, corrupt, stuck and failed as the module's docstring defines them."""
    figures = Figures(results=len(snapshot.results))
    complete = {photo.sha256 for photo in photos}
    expected = [photo for photo in photos if not photo.deleted]
    finals = {photo.sha256 for photo in expected}
    by_name = {name: photo for photo in photos for name in photo.names}
    by_stem = {Path(name).stem: photo for photo in photos for name in photo.names}
    per_content = Counter(result.input_sha256 for result in snapshot.results)

    for result in snapshot.results:
        if result.input_sha256 not in complete:
            figures.partial += 1
            figures.notes.append(f"result {result.stem!r}: made from no complete content")
        photo = by_name.get(result.source or "") or by_stem.get(result.stem)
        if photo is None:
            wrong = result.input_sha256 not in finals
        else:
            wrong = result.input_sha256 != photo.sha256
        if wrong:
            figures.corrupt += 1
            figures.notes.append(
                f"result {result.stem!r} (source {result.source!r}): not its photo's final content"
            )
    for content, results in per_content.items():
        if results > 1:
            figures.doubled += 1
            photo = next((p for p in photos if p.sha256 == content), None)
            name = photo.relative if photo else (content or "?")[:12]
            figures.notes.append(f"{name!r}: {results} results for one content")
    for name in snapshot.images_without_sidecar:
        figures.notes.append(f"result {name!r}: an image without its sidecar")

    active = {content for content, state in snapshot.jobs if state in ("queued", "running")}
    for photo in expected:
        painted = per_content[photo.sha256] > 0
        failed_with_reason = any(
            (content == photo.sha256 or name in photo.names) and reason
            for name, content, reason in snapshot.failed
        )
        # Kept originals stay in the inbox by design; moved ones must leave it once painted.
        waiting = photo.sha256 in snapshot.inbox and (policy != "keep" or not painted)
        if photo.sha256 in active:
            figures.stuck += 1
            figures.notes.append(f"{photo.relative!r}: stuck, its job queued or running")
        elif failed_with_reason:
            figures.failed += 1
        elif waiting:
            figures.stuck += 1
            figures.notes.append(f"{photo.relative!r}: stuck, still in the inbox")
        elif not painted:
            figures.lost += 1
            figures.notes.append(f"{photo.relative!r}: lost (no result, not in failed/)")
    strays = active - complete
    figures.stuck += len(strays)
    figures.notes.extend(
        f"job for content {content[:12]}: still queued or running, no photo's" for content in strays
    )
    for name, content, reason in snapshot.failed:
        if not reason:
            figures.notes.append(f"failed/{name!r}: no reason beside it")
        if content not in complete:
            figures.notes.append(f"failed/{name!r}: holds no complete content")
    if snapshot.journal_error:
        figures.notes.append(f"journal unreadable: {snapshot.journal_error}")
    return figures


# -- one case's folders and daemon -----------------------------------------------------------


@dataclass
class Bench:
    """What every case shares: where folders go, whose daemon runs, how many photos."""

    workdir: Path
    checkout: Path  # the daemon's code: PYTHONPATH of the subprocess
    photos: int
    say: Callable[[str], None]
    _variants: Iterator[int] = field(default_factory=itertools.count)

    def variant(self) -> int:
        """A photo variant not used before in this run, so that no two contents are equal."""
        return next(self._variants)


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=30)


class Share:
    """One case's inbox, outbox and state_dir, its config and a fresh daemon on them.

    The roots are made here: the current daemon refuses to start without them (an older one
    made them itself). With `outbox_tmpfs` the outbox is a tmpfs of its own, standing for a
    share; whatever is mounted here is unmounted when the case ends, whatever happened.
    """

    def __init__(
        self,
        bench: Bench,
        name: str,
        *,
        mode: Literal["auto", "native", "poll"] = "auto",
        policy: Literal["keep", "move"] = "move",
        settle_seconds: float = SETTLE_SECONDS,
        outbox_tmpfs: bool = False,
    ) -> None:
        self.bench = bench
        self.folder = bench.workdir / name
        self.inbox = self.folder / "inbox"
        self.outbox = self.folder / "outbox"
        self.state_dir = self.folder / "state"
        self.mode = mode
        self.policy = policy
        self.settle_seconds = settle_seconds
        self.outbox_tmpfs = outbox_tmpfs
        self.mounted = False
        self.daemon: Daemon | None = None
        self.ready = False
        self.exited_early = False
        self.killed = False
        self.stopped = False
        self.started = time.monotonic()

    def __enter__(self) -> Share:
        for folder in (self.inbox, self.outbox, self.state_dir):
            folder.mkdir(parents=True)
        try:
            if self.outbox_tmpfs:
                self.mount_outbox()
            config = write_config(
                self.folder,
                presets={PRESET: tiny_preset()},
                routing={"default_preset": PRESET},
                watch={
                    "mode": self.mode,
                    "settle_seconds": self.settle_seconds,
                    "poll_interval_seconds": POLL_INTERVAL_SECONDS,
                    "rescan_interval_seconds": RESCAN_SECONDS,
                },
                retries={"max_attempts": 3, "backoff_seconds": 2.0},
                originals={"policy": self.policy},
            )
            env = daemon_env(PYTHONPATH=str(self.bench.checkout))
            self.daemon = Daemon(config, env=env)
            self.ready = self._wait(lambda: self.daemon.count("outputs go to") > 0, START_SECONDS)
            if not self.ready:
                self.bench.say(f"  the daemon is not ready: {self.exit_line()}")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the daemon and unmount what this case mounted; safe to call twice."""
        try:
            self.stop()
        finally:
            if self.mounted:
                self.unmount_outbox(lazy=True)

    # The share.

    def mount_outbox(self) -> None:
        """Mount a fresh tmpfs on the outbox, as a share coming (back)."""
        _run("mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(self.outbox))
        self.mounted = True

    def unmount_outbox(self, *, lazy: bool) -> None:
        """Unmount the outbox's tmpfs; lazy: at once, even with files open, as a share dropping."""
        _run("umount", *(["-l"] if lazy else []), str(self.outbox))
        self.mounted = False

    # The daemon.

    @property
    def alive(self) -> bool:
        """Whether the daemon is still running."""
        return self.daemon is not None and self.daemon.process.poll() is None

    def _wait(self, condition: Callable[[], bool], seconds: float) -> bool:
        """Poll `condition` until true (True), the daemon exits or `seconds` pass (False)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if condition():
                return True
            if not self.alive:
                return bool(condition())
            time.sleep(0.25)
        return False

    def stop(self) -> None:
        """SIGTERM and wait, SIGKILL if it does not stop; an exit on its own is noted as such."""
        if self.daemon is None or self.stopped:
            return
        self.stopped = True
        process = self.daemon.process
        if process.poll() is not None:
            self.exited_early = True
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.killed = True
            process.kill()
            process.wait(30)

    def exit_line(self) -> str:
        """How the daemon ended (or that it runs), with its last log line when it ended early."""
        if self.daemon is None:
            return "never started"
        code = self.daemon.process.poll()
        if code is None:
            return "still running"
        tail = self.daemon.log_tail(1).strip()
        return f"exited {code}: {tail[:200]}"

    # What it did.

    def snapshot(self) -> Snapshot:
        """The folders and the journal now."""
        results, orphans = read_results(self.outbox / PRESET)
        jobs, journal_error = read_jobs(self.state_dir / JOURNAL_NAME)
        return Snapshot(
            results=results,
            images_without_sidecar=orphans,
            failed=read_failed(self.outbox / "failed"),
            inbox=read_inbox(self.inbox),
            jobs=jobs,
            journal_error=journal_error,
        )

    def wait_queued(self, photos: list[Photo], seconds: float) -> bool:
        """Wait until each photo has a queued job (the worker is paused, so none runs)."""
        wanted = {photo.sha256 for photo in photos}

        def queued() -> bool:
            jobs, _ = read_jobs(self.state_dir / JOURNAL_NAME)
            return wanted <= {content for content, state in jobs if state == "queued"}

        return self._wait(queued, seconds)

    def wait_over(self, photo: Photo, seconds: float) -> bool:
        """Wait until no job for the photo's content is queued or running."""

        def over() -> bool:
            jobs, _ = read_jobs(self.state_dir / JOURNAL_NAME)
            return not any(
                content == photo.sha256 and state in ("queued", "running")
                for content, state in jobs
            )

        return self._wait(over, seconds)

    def finish(
        self, case: int, label: str, photos: list[Photo], *, fault_gone_at: float
    ) -> CaseResult:
        """Wait until the photos are settled and have stayed so for a settle time and
        QUIET_SECONDS (or until DEADLINE_SECONDS after the fault was gone), stop the daemon
        and count."""
        deadline = fault_gone_at + DEADLINE_SECONDS
        settled_at: float | None = None  # since when it has been settled without a break
        while time.monotonic() < deadline and self.alive:
            if count(self.snapshot(), photos, self.policy).stuck == 0:
                now = time.monotonic()
                settled_at = settled_at or now
                if now - settled_at >= self.settle_seconds + QUIET_SECONDS:
                    break
            else:
                settled_at = None
            time.sleep(0.5)
        self.stop()
        figures = count(self.snapshot(), photos, self.policy)
        result = CaseResult(
            case=case,
            label=label,
            photos=len(photos),
            deleted=sum(photo.deleted for photo in photos),
            lost=figures.lost,
            doubled=figures.doubled,
            partial=figures.partial,
            corrupt=figures.corrupt,
            stuck=figures.stuck,
            failed=figures.failed,
            results=figures.results,
            ready=self.ready,
            exit_code=self.daemon.process.returncode if self.daemon else None,
            exited_early=self.exited_early,
            killed=self.killed,
            settled_seconds=(
                round(settled_at - fault_gone_at, 1) if settled_at is not None else None
            ),
            notes=figures.notes,
        )
        if self.daemon is not None:
            log = self.daemon.log()
            result.tracebacks = log.count("Traceback (most recent call last)")
            if self.exited_early:
                result.notes.insert(0, f"the daemon {self.exit_line()}")
        result.seconds = round(time.monotonic() - self.started, 1)
        return result


# -- the cases -------------------------------------------------------------------------------


def case_preallocated(bench: Bench) -> list[CaseResult]:
    """Case 1: SMB-style preallocated writes of each format, native and polled, moved and kept."""
    runs: list[tuple[Literal["native", "poll"], Literal["move", "keep"]]] = [
        ("native", "move"),
        ("poll", "move"),
        ("native", "keep"),
    ]
    found = []
    for mode, policy in runs:
        label = f"preallocated writes, {mode}, {policy}"
        bench.say(f"case 1: {label}")
        settle = PREALLOCATED_SETTLE_SECONDS
        folder = f"1-{mode}-{policy}"
        with Share(bench, folder, mode=mode, policy=policy, settle_seconds=settle) as share:
            photos, writers = [], []
            for index in range(bench.photos):
                format = FORMATS[index % len(FORMATS)]
                data = encode(bench.variant(), format)
                relative = f"pre_{index:02d}{EXTENSIONS[format]}"
                photos.append(Photo.dropped(relative, data))
                path = share.inbox / relative
                writers.append(functools.partial(write_preallocated, path, data, 2 * settle))
            # One file after another, as Explorer copies: each half-written file is the only
            # one the daemon has to paint, as when a user copies a single photo.
            problems = run_writers(
                writers, WRITERS_SECONDS + len(writers) * 2 * settle, in_turn=True
            )
            result = share.finish(1, label, photos, fault_gone_at=time.monotonic())
            result.notes.extend(problems)
        found.append(result)
    return found


def case_rearranged(bench: Bench) -> list[CaseResult]:
    """Case 2: queued photos renamed, moved into a subfolder and deleted while the worker is
    paused; then resumed, and a deleted photo's bytes dropped again (a new job is expected)."""
    label = "queued photos renamed, moved, deleted"
    bench.say(f"case 2: {label}")
    with Share(bench, "2-rearranged") as share:
        (share.state_dir / PAUSE_NAME).write_text("paused by bench.share_faults\n")
        photos, contents = [], []
        for index in range(bench.photos):
            data = encode(bench.variant(), "JPEG")
            photo = Photo.dropped(f"queued_{index:02d}.jpg", data)
            write_whole(share.inbox / photo.relative, data)
            photos.append(photo)
            contents.append(data)
        notes = []
        if not share.wait_queued(photos, QUEUED_SECONDS):
            notes.append(f"not every photo was queued within {QUEUED_SECONDS:g} s")
        (share.inbox / "sub").mkdir()
        for index, photo in enumerate(photos):
            source = share.inbox / photo.relative
            target = {
                0: f"queued_{index:02d}_renamed.jpg",
                1: f"sub/queued_{index:02d}.jpg",
                2: None,
            }[index % 3]
            try:
                if target is None:
                    source.unlink()
                    photo.deleted = True
                else:
                    source.rename(share.inbox / target)
                    photo.moved(target)
            except OSError as error:
                notes.append(f"{photo.relative}: could not rearrange it: {error}")
        # No condition tells from outside that the daemon has seen the moves: give it a settle
        # time and a rescan, as a user would before resuming.
        time.sleep(SETTLE_SECONDS + RESCAN_SECONDS + 1.0)
        (share.state_dir / PAUSE_NAME).unlink()
        resumed_at = time.monotonic()
        deleted = next((i for i, photo in enumerate(photos) if photo.deleted), None)
        if deleted is not None:
            # Later means once the deleted photo's job is over (cancelled, or failed by an older
            # daemon): dropped before that, the bytes could take the queued job over.
            if not share.wait_over(photos[deleted], QUEUED_SECONDS):
                notes.append(f"{photos[deleted].relative}: its job still queued after deletion")
            again = Photo.dropped("dropped_again.jpg", contents[deleted])
            write_whole(share.inbox / again.relative, contents[deleted])
            photos.append(again)
        result = share.finish(2, label, photos, fault_gone_at=resumed_at)
        result.notes[:0] = notes
    return [result]


def _fill(path: Path) -> int:
    """Write `path` until the filesystem is full (ENOSPC); the bytes written."""
    written = 0
    with path.open("wb", buffering=0) as file:
        for chunk in (1 << 20, 1 << 12):
            block = b"\0" * chunk
            while True:
                try:
                    written += file.write(block)
                except OSError as error:
                    if error.errno != errno.ENOSPC:
                        raise
                    break
    return written


def case_full_outbox(bench: Bench) -> list[CaseResult]:
    """Case 3: the outbox (a tmpfs) full to ENOSPC while photos wait, then space again."""
    label = "outbox full, then freed"
    if os.geteuid() != 0:
        return [CaseResult(3, label, skipped="not root: mounting a tmpfs needs root")]
    bench.say(f"case 3: {label}")
    with Share(bench, "3-outbox-full", outbox_tmpfs=True) as share:
        filler = share.outbox / "filler.bin"
        written = _fill(filler)
        photos = []
        for index in range(bench.photos):
            data = encode(bench.variant(), "JPEG")
            photo = Photo.dropped(f"full_{index:02d}.jpg", data)
            write_whole(share.inbox / photo.relative, data)
            photos.append(photo)
        time.sleep(FULL_SECONDS)  # the fault's duration: the disk stays full this long
        filler.unlink()
        result = share.finish(3, label, photos, fault_gone_at=time.monotonic())
        result.notes.insert(0, f"filler: {written / 2**20:.1f} MiB up to ENOSPC")
    return [result]


def case_unmounted(bench: Bench) -> list[CaseResult]:
    """Case 4: the outbox share unmounted under the daemon, photos dropped, a new one mounted."""
    label = "outbox share unmounted, remounted"
    if os.geteuid() != 0:
        return [CaseResult(4, label, skipped="not root: mounting a tmpfs needs root")]
    bench.say(f"case 4: {label}")
    with Share(bench, "4-outbox-unmounted", outbox_tmpfs=True) as share:
        share.unmount_outbox(lazy=True)
        photos = []
        for index in range(bench.photos):
            data = encode(bench.variant(), "JPEG")
            photo = Photo.dropped(f"gone_{index:02d}.jpg", data)
            write_whole(share.inbox / photo.relative, data)
            photos.append(photo)
        time.sleep(GONE_SECONDS)  # the fault's duration: the share stays away this long
        bare = files_below(share.outbox)
        share.mount_outbox()
        result = share.finish(4, label, photos, fault_gone_at=time.monotonic())
        result.bare_writes = len(bare)
        if bare:
            shown = ", ".join(bare[:6]) + (", ..." if len(bare) > 6 else "")
            result.notes.insert(0, f"{len(bare)} file(s) under the bare mount point: {shown}")
    return [result]


def case_odd_names(bench: Bench) -> list[CaseResult]:
    """Case 5: names that are not UTF-8, names with a newline, and one that forges a log line."""
    label = "names not UTF-8, with newlines"
    bench.say(f"case 5: {label}")
    with Share(bench, "5-odd-names") as share:
        photos = []
        for index in range(bench.photos):
            name = (
                f"caf\udce9_{index:02d}.jpg",  # b"caf\xe9...": Latin-1, as old SMB and zip names
                f"new\nline_{index:02d}.jpg",
                f"forged_{index:02d}\n{FORGED_LOG_LINE} {index:02d}.jpg",
            )[index % 3]
            data = encode(bench.variant(), "JPEG")
            photo = Photo.dropped(name, data)
            write_whole(os.fsencode(share.inbox) + b"/" + os.fsencode(name), data)
            photos.append(photo)
        result = share.finish(5, label, photos, fault_gone_at=time.monotonic())
        if share.daemon is not None:
            lines = share.daemon.log().splitlines()
            result.forged_log_lines = sum(line.startswith(FORGED_LOG_LINE) for line in lines)
            if result.forged_log_lines:
                result.notes.insert(0, f"{result.forged_log_lines} forged line(s) in the log")
    return [result]


def case_stalled(bench: Bench) -> list[CaseResult]:
    """Case 6: copies that stall longer than five settle times with the file open."""
    label = f"copies stalled {STALL_SECONDS:g} s"
    bench.say(f"case 6: {label}")
    with Share(bench, "6-stalled") as share:
        photos, writers = [], []
        for index in range(bench.photos):
            format = FORMATS[index % len(FORMATS)]
            data = encode(bench.variant(), format)
            photo = Photo.dropped(f"stalled_{index:02d}{EXTENSIONS[format]}", data)
            photos.append(photo)
            writers.append(
                functools.partial(write_stalled, share.inbox / photo.relative, data, STALL_SECONDS)
            )
        problems = run_writers(writers, WRITERS_SECONDS)
        result = share.finish(6, label, photos, fault_gone_at=time.monotonic())
        result.notes.extend(problems)
    return [result]


def case_inbox_recreated(bench: Bench) -> list[CaseResult]:
    """Case 7: the inbox folder removed and made again while the daemon runs; photos after."""
    label = "inbox removed and recreated"
    bench.say(f"case 7: {label}")
    with Share(bench, "7-inbox-recreated") as share:
        shutil.rmtree(share.inbox)
        # Away for longer than a rescan, so that a daemon that looks finds it gone.
        time.sleep(RESCAN_SECONDS + 1.0)
        share.inbox.mkdir()
        photos = []
        for index in range(bench.photos):
            data = encode(bench.variant(), "JPEG")
            photo = Photo.dropped(f"again_{index:02d}.jpg", data)
            write_whole(share.inbox / photo.relative, data)
            photos.append(photo)
        result = share.finish(7, label, photos, fault_gone_at=time.monotonic())
    return [result]


CASES: dict[int, Callable[[Bench], list[CaseResult]]] = {
    1: case_preallocated,
    2: case_rearranged,
    3: case_full_outbox,
    4: case_unmounted,
    5: case_odd_names,
    6: case_stalled,
    7: case_inbox_recreated,
}


# -- the report ------------------------------------------------------------------------------


def machine() -> dict[str, object]:
    """The CPU (model, cores, whether it has bf16 instructions) and the software around."""
    model, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "bf16": bool(flags & {"avx512_bf16", "amx_bf16"}),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "root": os.geteuid() == 0,
    }


def checkout_version(checkout: Path) -> str:
    """The checkout's commit, with "+changes" when its working tree differs from it."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+changes" if changes else "")


FIGURES = ("photos", "lost", "doubled", "partial", "corrupt", "stuck", "failed")


def total(results: list[CaseResult]) -> dict[str, int]:
    """The figures summed over the cases that ran."""
    ran = [result for result in results if result.skipped is None]
    return {name: sum(getattr(result, name) for result in ran) for name in FIGURES}


def exit_text(result: CaseResult) -> str:
    """The daemon's end in a few characters: its code, and how it came to end."""
    if result.exit_code is None:
        return "-"
    if result.exited_early:
        return f"{result.exit_code} early"
    return "killed" if result.killed else str(result.exit_code)


def print_table(results: list[CaseResult], title: str) -> None:
    """The figures per case and in total, then each case's notes."""
    print(f"\n{title}")
    header = f"{'case':44}" + "".join(f"{name:>8}" for name in FIGURES)
    print(header + f"{'exit':>9}{'settled':>9}{'secs':>7}")
    for result in results:
        name = f"{result.case} {result.label}"
        if result.skipped:
            print(f"{name:44} skipped: {result.skipped}")
            continue
        figures = "".join(f"{getattr(result, key):8d}" for key in FIGURES)
        settled = "-" if result.settled_seconds is None else f"{result.settled_seconds:g}"
        print(f"{name:44}{figures}{exit_text(result):>9}{settled:>9}{result.seconds:7.1f}")
    sums = total(results)
    print(f"{'total':44}" + "".join(f"{sums[key]:8d}" for key in FIGURES))
    for result in results:
        extra = []
        if result.deleted:
            extra.append(f"deleted on purpose (expected gone, not counted): {result.deleted}")
        if result.bare_writes is not None:
            extra.append(f"files under the bare mount point: {result.bare_writes}")
        if result.forged_log_lines is not None:
            extra.append(f"forged log lines: {result.forged_log_lines}")
        if result.tracebacks:
            extra.append(f"tracebacks in the log: {result.tracebacks}")
        notes = extra + result.notes
        if notes:
            print(f"\n{result.case} {result.label}:")
            for note in notes[:12]:
                print(f"  {note}")
            if len(notes) > 12:
                print(f"  ... {len(notes) - 12} more in the JSON")


def parse_cases(text: str) -> list[int]:
    """'1,3,5' -> [1, 3, 5]; ArgumentTypeError for a case that does not exist."""
    try:
        cases = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        message = f"expected case numbers such as 1,3,5, got {text!r}"
        raise argparse.ArgumentTypeError(message) from None
    unknown = [case for case in cases if case not in CASES]
    if unknown or not cases:
        raise argparse.ArgumentTypeError(f"cases are 1 to {len(CASES)}, got {text!r}")
    return cases


def main() -> None:
    """Parse the options, run the cases in a temporary folder, print and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=parse_cases, default=sorted(CASES))
    parser.add_argument("--photos", type=int, default=8, help="per case (per run in case 1)")
    parser.add_argument("--against", type=Path, help="another checkout whose daemon to run")
    parser.add_argument("--workdir", type=Path, help="keep the folders here (default: a temp)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    if args.photos < 1:
        parser.error("--photos must be at least 1")
    if args.workdir is not None and args.workdir.exists() and any(args.workdir.iterdir()):
        parser.error(f"--workdir {args.workdir} is not empty: old folders would be counted")
    checkout = (args.against or REPO).resolve()
    if not (checkout / "daemon" / "__main__.py").is_file():
        parser.error(f"{checkout} holds no daemon/__main__.py")
    started = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {text}", flush=True)

    version = checkout_version(checkout)
    say(f"the daemon of {checkout} ({version}); {args.photos} photos per case")
    results: list[CaseResult] = []
    with tempfile.TemporaryDirectory(prefix="stylebox-share-faults-") as temporary:
        workdir = args.workdir or Path(temporary)
        workdir.mkdir(parents=True, exist_ok=True)
        bench = Bench(workdir.resolve(), checkout, args.photos, say)
        for case in args.cases:
            try:
                found = CASES[case](bench)
            except Exception as error:  # one case's breakage must not hide the others' figures
                label = (CASES[case].__doc__ or "").splitlines()[0]
                found = [CaseResult(case, label, skipped=f"broke: {error!r}")]
            for result in found:
                if result.skipped:
                    say(f"case {case}: skipped: {result.skipped}")
                else:
                    say(
                        f"case {case}: {result.label}: lost {result.lost}, doubled "
                        f"{result.doubled}, partial {result.partial}, corrupt {result.corrupt}, "
                        f"stuck {result.stuck} ({result.seconds:g} s)"
                    )
            results.extend(found)

    title = (
        f"share faults: the daemon of {checkout} ({version}), {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} "
        f"photos, preset 40 px 4 steps, settle {SETTLE_SECONDS:g} s, rescan {RESCAN_SECONDS:g} s"
    )
    print_table(results, title)
    sums = total(results)
    report = {
        "checkout": str(checkout),
        "version": version,
        "against": args.against is not None,
        "machine": machine(),
        "settings": {
            "photos_per_case": args.photos,
            "photo_size": list(PHOTO_SIZE),
            "preset": {"size": 40, "steps": 4},
            "settle_seconds": SETTLE_SECONDS,
            "rescan_interval_seconds": RESCAN_SECONDS,
            "deadline_seconds": DEADLINE_SECONDS,
            "quiet_seconds": QUIET_SECONDS,
        },
        "cases": [asdict(result) for result in results],
        "total": sums,
        "seconds": round(time.monotonic() - started, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"share_faults_{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    path.write_text(json.dumps(report, indent=2, ensure_ascii=True))
    print(f"\nwrote {path}")
    bad = sum(sums[name] for name in ("lost", "doubled", "partial", "corrupt", "stuck"))
    print("verdict:", "OK" if bad == 0 else f"FAILED ({bad})")
    sys.exit(0 if bad == 0 else 1)


if __name__ == "__main__":
    main()
