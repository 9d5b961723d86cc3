"""The stability tracker on its own: observations and clock times passed in, verdicts checked.

No threads, no sleeping, no watcher: the clock is whatever number the test says it is, so each
boundary (one settle period, each extra period a failed readiness check buys, the second look a
share needs, stalled_seconds) is hit exactly. Most tests follow a file whose writer is known to
have gone (a local file: a read lease was granted); those about shares, writers still at work and
stalled copies say which writer they see.
"""

import dataclasses
import os
from pathlib import Path

import pytest

from daemon.service.stability import (
    READY_CHECKS,
    STALLED_SECONDS,
    GivenUp,
    Observation,
    StabilityTracker,
    Verdict,
    Writer,
)

SETTLE = 2.0
PHOTO = Observation(size_bytes=1000, mtime_ns=1_700_000_000_000_000_000, writer=Writer.CLOSED)
ON_A_SHARE = dataclasses.replace(PHOTO, writer=Writer.UNKNOWN)  # no lease, no events
DIGEST, OTHER_DIGEST = b"first half, zeros after", b"both halves"


def test_the_first_look_waits_even_with_no_settle_period() -> None:
    """One observation cannot show that nothing changes; a second one at the same instant can."""
    tracker = StabilityTracker(0.0)
    assert tracker.observe(PHOTO, now=5.0) is Verdict.WAIT
    assert tracker.observe(PHOTO, now=5.0) is Verdict.ASK_READY


def test_a_still_file_is_asked_about_after_one_settle_period() -> None:
    tracker = StabilityTracker(SETTLE)
    assert tracker.observe(PHOTO, now=10.0) is Verdict.WAIT
    assert tracker.observe(PHOTO, now=11.0) is Verdict.WAIT
    assert tracker.observe(PHOTO, now=10.0 + SETTLE - 0.001) is Verdict.WAIT
    assert tracker.observe(PHOTO, now=10.0 + SETTLE) is Verdict.ASK_READY
    assert tracker.ready_checked(True) is Verdict.SETTLED


@pytest.mark.parametrize(
    "changed",
    [
        dataclasses.replace(PHOTO, size_bytes=PHOTO.size_bytes + 1),
        dataclasses.replace(PHOTO, mtime_ns=PHOTO.mtime_ns + 1),  # rewritten in place, same size
        dataclasses.replace(PHOTO, size_bytes=0),  # truncated to start over
    ],
    ids=["grew", "touched", "truncated"],
)
def test_any_change_restarts_the_settle_period(changed: Observation) -> None:
    tracker = StabilityTracker(SETTLE)
    tracker.observe(PHOTO, now=0.0)
    assert tracker.observe(changed, now=1.5) is Verdict.WAIT
    assert tracker.observe(changed, now=SETTLE) is Verdict.WAIT  # the first look's period is void
    assert tracker.observe(changed, now=1.5 + SETTLE - 0.001) is Verdict.WAIT
    assert tracker.observe(changed, now=1.5 + SETTLE) is Verdict.ASK_READY


def test_files_judged_at_one_pass_clock_settle_in_the_order_they_stopped_changing() -> None:
    """A pass looks at many files one after another. Were each judged at the instant it was looked
    at, a file that came later but was looked at later in a pass could pass its settle period
    while an earlier one, looked at sooner, had not: the later file would be queued first."""
    first, second = StabilityTracker(SETTLE), StabilityTracker(SETTLE)
    first.observe(PHOTO, now=0.0, seen_at=0.0)
    second.observe(ON_A_SHARE, now=0.0, seen_at=0.05)  # came after: still from 0.05
    # The next pass starts just short of the first's period and reaches the second after it.
    start = SETTLE - 0.01
    assert first.observe(PHOTO, now=start, seen_at=start) is Verdict.WAIT
    assert second.observe(ON_A_SHARE, now=start, seen_at=start + 0.1) is Verdict.WAIT
    # Judged at the same clock, the one still since earlier is asked about first.
    assert first.observe(PHOTO, now=SETTLE, seen_at=SETTLE) is Verdict.ASK_READY
    assert second.observe(ON_A_SHARE, now=SETTLE, seen_at=SETTLE + 0.1) is Verdict.WAIT


def test_a_change_counts_from_when_it_was_seen_not_from_the_pass_start() -> None:
    """A long pass must not overstate stillness: a change seen late in one pass starts its
    settle period then, not at that pass's start."""
    tracker = StabilityTracker(SETTLE)
    tracker.observe(PHOTO, now=0.0, seen_at=1.0)
    assert tracker.observe(PHOTO, now=SETTLE, seen_at=SETTLE) is Verdict.WAIT
    assert tracker.observe(PHOTO, now=1.0 + SETTLE, seen_at=1.0 + SETTLE) is Verdict.ASK_READY


def test_a_file_that_keeps_growing_is_never_asked_about() -> None:
    tracker = StabilityTracker(SETTLE)
    for chunk in range(50):
        grown = Observation(size_bytes=100 * (chunk + 1), mtime_ns=PHOTO.mtime_ns + chunk)
        assert tracker.observe(grown, now=chunk * SETTLE) is Verdict.WAIT


def test_each_not_ready_buys_one_more_settle_period_until_it_gives_up() -> None:
    """A truncated photo never becomes whole: asked at 1, 2, ... 5 periods, then handed over."""
    tracker = StabilityTracker(SETTLE)
    tracker.observe(PHOTO, now=0.0)
    asked_at: list[float] = []
    answers: list[Verdict] = []
    for step in range(1, 200):
        now = step * 0.25
        if tracker.observe(PHOTO, now=now) is Verdict.ASK_READY:
            asked_at.append(now)
            answers.append(tracker.ready_checked(False))
            if answers[-1] is not Verdict.WAIT:
                break
    assert asked_at == [period * SETTLE for period in range(1, READY_CHECKS + 1)]
    assert answers == [Verdict.WAIT] * (READY_CHECKS - 1) + [Verdict.GIVE_UP]
    assert tracker.failed_ready_checks == READY_CHECKS


def test_ready_at_a_later_check_settles() -> None:
    tracker = StabilityTracker(SETTLE)
    tracker.observe(PHOTO, now=0.0)
    assert tracker.observe(PHOTO, now=SETTLE) is Verdict.ASK_READY
    assert tracker.ready_checked(False) is Verdict.WAIT
    assert tracker.observe(PHOTO, now=2 * SETTLE - 0.001) is Verdict.WAIT
    assert tracker.observe(PHOTO, now=2 * SETTLE) is Verdict.ASK_READY
    assert tracker.ready_checked(True) is Verdict.SETTLED


def test_a_change_after_a_failed_check_starts_the_count_afresh() -> None:
    tracker = StabilityTracker(SETTLE)
    tracker.observe(PHOTO, now=0.0)
    assert tracker.observe(PHOTO, now=SETTLE) is Verdict.ASK_READY
    assert tracker.ready_checked(False) is Verdict.WAIT
    assert tracker.failed_ready_checks == 1
    rest_written = dataclasses.replace(PHOTO, size_bytes=2000, mtime_ns=PHOTO.mtime_ns + 1)
    assert tracker.observe(rest_written, now=3.0) is Verdict.WAIT
    assert tracker.failed_ready_checks == 0
    assert tracker.observe(rest_written, now=3.0 + SETTLE) is Verdict.ASK_READY  # one period


def test_fewer_ready_checks_give_up_sooner() -> None:
    tracker = StabilityTracker(SETTLE, ready_checks=1)
    tracker.observe(PHOTO, now=0.0)
    assert tracker.observe(PHOTO, now=SETTLE) is Verdict.ASK_READY
    assert tracker.ready_checked(False) is Verdict.GIVE_UP


def test_not_a_regular_file_is_settled_at_once_and_never_asked_about() -> None:
    """A FIFO asked about would be opened, and opening it blocks the caller."""
    tracker = StabilityTracker(SETTLE)
    fifo = dataclasses.replace(PHOTO, is_regular_file=False)
    assert tracker.observe(fifo, now=0.0) is Verdict.SETTLED
    with pytest.raises(RuntimeError, match="ASK_READY"):
        tracker.ready_checked(True)


def test_a_readiness_answer_is_taken_only_right_after_an_ask() -> None:
    tracker = StabilityTracker(SETTLE)
    with pytest.raises(RuntimeError):
        tracker.ready_checked(True)  # never observed
    tracker.observe(PHOTO, now=0.0)
    assert tracker.observe(PHOTO, now=SETTLE) is Verdict.ASK_READY
    assert tracker.ready_checked(False) is Verdict.WAIT
    with pytest.raises(RuntimeError):
        tracker.ready_checked(True)  # answered already
    assert tracker.observe(PHOTO, now=3 * SETTLE) is Verdict.ASK_READY
    changed = dataclasses.replace(PHOTO, size_bytes=PHOTO.size_bytes + 1)
    assert tracker.observe(changed, now=3 * SETTLE) is Verdict.WAIT  # changed before the answer
    with pytest.raises(RuntimeError):
        tracker.ready_checked(True)  # an answer about what the file was no longer counts


@pytest.mark.parametrize(
    ("settle_seconds", "ready_checks", "stalled_seconds"),
    [
        (-0.1, READY_CHECKS, STALLED_SECONDS),
        (SETTLE, 0, STALLED_SECONDS),
        (SETTLE, -1, STALLED_SECONDS),
        (SETTLE, READY_CHECKS, SETTLE - 0.1),
    ],
)
def test_settings_out_of_range_are_refused(
    settle_seconds: float, ready_checks: int, stalled_seconds: float
) -> None:
    with pytest.raises(ValueError, match="stability"):
        StabilityTracker(settle_seconds, ready_checks=ready_checks, stalled_seconds=stalled_seconds)


def test_observations_are_frozen_values() -> None:
    """Equal means the bytes did not change: who writes the file takes no part."""
    same = Observation(size_bytes=PHOTO.size_bytes, mtime_ns=PHOTO.mtime_ns, writer=Writer.OPEN)
    assert same == PHOTO
    assert hash(same) == hash(PHOTO)
    assert Observation(1, 2, is_regular_file=False) != Observation(1, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        PHOTO.size_bytes = 0  # type: ignore[misc]


def test_an_observation_of_an_lstat_result(tmp_path: Path) -> None:
    """What the watcher passes in: the lstat of a file, a symlink (not followed), a FIFO."""
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"x" * 321)
    os.utime(photo, ns=(1_000, 1_650_000_000_123_456_789))
    assert Observation.of(os.lstat(photo)) == Observation(321, 1_650_000_000_123_456_789, True)
    assert Observation.of(os.lstat(photo), Writer.OPEN).writer is Writer.OPEN
    link = tmp_path / "link.jpg"
    link.symlink_to(photo)
    assert not Observation.of(os.lstat(link)).is_regular_file
    pipe = tmp_path / "pipe.jpg"
    os.mkfifo(pipe)
    assert not Observation.of(os.lstat(pipe)).is_regular_file


# -- writers still at work, shares, stalled copies ---------------------------------------------


def looks(
    tracker: StabilityTracker,
    observation: Observation,
    start: float,
    end: float,
    *,
    ready: bool,
    digest: bytes | None = DIGEST,
    step: float = 0.25,
) -> list[tuple[float, Verdict]]:
    """Observe `observation` every `step` s from `start` to `end`, answering each ASK_READY with
    `ready` and `digest`; the (time, verdict) of each answer, up to the first that is not WAIT."""
    answers = []
    for tick in range(round((end - start) / step) + 1):
        now = start + tick * step
        verdict = tracker.observe(observation, now)
        if verdict is Verdict.ASK_READY:
            answers.append((now, tracker.ready_checked(ready, sample_digest=digest)))
            if answers[-1][1] is not Verdict.WAIT:
                break
        else:
            assert verdict is Verdict.WAIT, (now, verdict)
    return answers


def test_a_file_open_for_writing_is_never_asked_about_however_long_it_is_still() -> None:
    """A Windows client copying through smbd holds its handle to the end: a preallocated file,
    half written and paused, stays still for as long as the pause, and must not be taken."""
    tracker = StabilityTracker(SETTLE, stalled_seconds=10 * SETTLE)
    held = dataclasses.replace(PHOTO, writer=Writer.OPEN)
    tracker.observe(held, now=0.0)
    assert looks(tracker, held, 0.25, 100 * SETTLE, ready=True) == []
    # Closed at last, long after its last write: taken at once, no settle period to sit out.
    assert tracker.observe(PHOTO, now=100 * SETTLE + 0.25) is Verdict.ASK_READY
    assert tracker.ready_checked(True) is Verdict.SETTLED


def test_on_a_share_two_looks_a_settle_period_apart_must_agree() -> None:
    tracker = StabilityTracker(SETTLE)
    tracker.observe(ON_A_SHARE, now=0.0)
    answers = looks(tracker, ON_A_SHARE, 0.25, 10 * SETTLE, ready=True)
    assert answers == [(SETTLE, Verdict.WAIT), (2 * SETTLE, Verdict.SETTLED)]


def test_a_preallocated_file_filled_after_a_pause_is_taken_whole_not_half() -> None:
    """The issue's case on a share: the size set first, half written, a pause just over one
    settle period; the first half decodes (a BMP), but the second look never comes before the
    rest is written, and the rest restarts the count."""
    tracker = StabilityTracker(SETTLE)
    half = ON_A_SHARE
    tracker.observe(half, now=0.0)
    pause = 1.4 * SETTLE
    assert looks(tracker, half, 0.25, pause, ready=True) == [(SETTLE, Verdict.WAIT)]
    whole = dataclasses.replace(half, mtime_ns=half.mtime_ns + 1)  # same size: preallocated
    assert tracker.observe(whole, now=pause + 0.25) is Verdict.WAIT
    answers = looks(tracker, whole, pause + 0.5, pause + 10 * SETTLE, ready=True, digest=b"w")
    assert answers == [
        (pause + 0.25 + SETTLE, Verdict.WAIT),
        (pause + 0.25 + 2 * SETTLE, Verdict.SETTLED),
    ]


def test_bytes_that_change_under_the_same_size_and_mtime_restart_the_count() -> None:
    """A share's cached attributes, or a writer that sets the mtime back: the digest sees it."""
    tracker = StabilityTracker(SETTLE)
    tracker.observe(ON_A_SHARE, now=0.0)
    assert tracker.observe(ON_A_SHARE, now=SETTLE) is Verdict.ASK_READY
    assert tracker.ready_checked(True, sample_digest=DIGEST) is Verdict.WAIT
    assert tracker.observe(ON_A_SHARE, now=2 * SETTLE) is Verdict.ASK_READY
    assert tracker.ready_checked(True, sample_digest=OTHER_DIGEST) is Verdict.WAIT
    assert tracker.still_since == 2 * SETTLE
    assert tracker.observe(ON_A_SHARE, now=3 * SETTLE - 0.25) is Verdict.WAIT
    assert tracker.observe(ON_A_SHARE, now=3 * SETTLE) is Verdict.ASK_READY
    assert tracker.ready_checked(True, sample_digest=OTHER_DIGEST) is Verdict.SETTLED


def test_an_unreadable_digest_leaves_the_judgement_to_size_mtime_and_time() -> None:
    tracker = StabilityTracker(SETTLE)
    tracker.observe(ON_A_SHARE, now=0.0)
    answers = looks(tracker, ON_A_SHARE, 0.25, 10 * SETTLE, ready=True, digest=None)
    assert answers == [(SETTLE, Verdict.WAIT), (2 * SETTLE, Verdict.SETTLED)]


def test_written_since_the_last_close_event_waits_until_stalled() -> None:
    """inotify said a write came after the last close: a writer is at work. An event can be lost
    (a full queue), so unlike a held lease this holds only up to stalled_seconds."""
    stalled = 20 * SETTLE
    tracker = StabilityTracker(SETTLE, stalled_seconds=stalled)
    writing = dataclasses.replace(PHOTO, writer=Writer.WRITING)
    tracker.observe(writing, now=0.0)
    answers = looks(tracker, writing, 0.25, 2 * stalled, ready=True)
    assert answers[0] == (stalled, Verdict.WAIT)  # first asked at stalled_seconds
    assert answers[-1] == (stalled + SETTLE, Verdict.SETTLED)  # and looked at twice


def test_an_incomplete_file_on_a_share_is_given_up_only_after_stalled_seconds() -> None:
    """A copy stalled on a share (no word of its writer) may resume: no quarantine before
    stalled_seconds, and meanwhile the looks thin out instead of decoding every settle period."""
    tracker = StabilityTracker(SETTLE)  # stalled_seconds: the config's default
    tracker.observe(ON_A_SHARE, now=0.0)
    answers = looks(tracker, ON_A_SHARE, 0.5, STALLED_SECONDS + SETTLE, ready=False, step=0.5)
    times = [now for now, _ in answers]
    assert [verdict for _, verdict in answers[:-1]] == [Verdict.WAIT] * (len(answers) - 1)
    assert answers[-1] == (STALLED_SECONDS, Verdict.GIVE_UP)
    assert times[:READY_CHECKS] == [SETTLE * n for n in range(1, READY_CHECKS + 1)]
    assert len(answers) < STALLED_SECONDS / SETTLE / 10


def test_a_stalled_copy_that_resumes_starts_afresh_and_is_taken_whole() -> None:
    tracker = StabilityTracker(SETTLE, stalled_seconds=30 * SETTLE)
    tracker.observe(ON_A_SHARE, now=0.0)
    assert looks(tracker, ON_A_SHARE, 0.5, 29 * SETTLE, ready=False)[-1][1] is Verdict.WAIT
    resumed = dataclasses.replace(ON_A_SHARE, size_bytes=2 * ON_A_SHARE.size_bytes)
    assert tracker.observe(resumed, now=29 * SETTLE + 0.25) is Verdict.WAIT
    assert tracker.failed_ready_checks == 0
    answers = looks(tracker, resumed, 29 * SETTLE + 0.5, 40 * SETTLE, ready=True)
    assert answers[-1] == (29 * SETTLE + 0.25 + 2 * SETTLE, Verdict.SETTLED)


@pytest.mark.parametrize(
    ("lease", "events", "writer"),
    [
        (True, None, Writer.OPEN),
        (True, False, Writer.OPEN),  # the kernel's word over inotify's
        (False, True, Writer.CLOSED),  # a close event still queued: the lease is granted now
        (None, True, Writer.WRITING),
        (None, False, Writer.CLOSED),
        (None, None, Writer.UNKNOWN),
    ],
)
def test_who_writes_the_kernel_first_then_inotify(
    lease: bool | None, events: bool | None, writer: Writer
) -> None:
    assert Writer.told(lease, events) is writer


def test_given_up_files_that_change_in_quarantine_are_named_once_changed() -> None:
    """Matched by inode: the service moved the file into failed/ under another name, perhaps."""
    given_up = GivenUp()
    half, rest = (1000, 1), (1000, 2)
    given_up.remember((1, 10), "/inbox/a.png", half)
    given_up.remember((1, 11), "/inbox/b.png", half)
    quarantined = {(1, 10): ("a.png", half), (1, 11): ("b-1.png", half)}
    assert given_up.changed(quarantined, in_inbox=set()) == []
    quarantined[(1, 11)] = ("b-1.png", rest)  # its writer went on
    assert given_up.changed(quarantined, in_inbox=set()) == [((1, 11), "b-1.png")]
    given_up.forget((1, 11))
    assert len(given_up) == 1


def test_given_up_files_found_in_neither_folder_twice_are_forgotten() -> None:
    """Stylised after all (moved to originals/), deleted, or moved by hand; one still queued in
    the inbox, not yet quarantined, is kept however long the queue."""
    given_up = GivenUp()
    given_up.remember((1, 10), "/inbox/gone.png", (5, 5))
    given_up.remember((1, 11), "/inbox/queued.png", (5, 5))
    for _ in range(5):
        assert given_up.changed({}, in_inbox={(1, 11)}) == []
    assert given_up.paths() == {(1, 11): "/inbox/queued.png"}
