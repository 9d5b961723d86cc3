"""The stability tracker on its own: observations and clock times passed in, verdicts checked.

No threads, no sleeping, no watcher: the clock is whatever number the test says it is, so each
boundary (one settle period, each extra period a failed readiness check buys) is hit exactly.
"""

import dataclasses
import os
from pathlib import Path

import pytest

from daemon.service.stability import READY_CHECKS, Observation, StabilityTracker, Verdict

SETTLE = 2.0
PHOTO = Observation(size_bytes=1000, mtime_ns=1_700_000_000_000_000_000)


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
    ("settle_seconds", "ready_checks"), [(-0.1, READY_CHECKS), (SETTLE, 0), (SETTLE, -1)]
)
def test_settings_out_of_range_are_refused(settle_seconds: float, ready_checks: int) -> None:
    with pytest.raises(ValueError, match="stability"):
        StabilityTracker(settle_seconds, ready_checks=ready_checks)


def test_observations_are_frozen_values() -> None:
    same = Observation(size_bytes=PHOTO.size_bytes, mtime_ns=PHOTO.mtime_ns)
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
    link = tmp_path / "link.jpg"
    link.symlink_to(photo)
    assert not Observation.of(os.lstat(link)).is_regular_file
    pipe = tmp_path / "pipe.jpg"
    os.mkfifo(pipe)
    assert not Observation.of(os.lstat(pipe)).is_regular_file
