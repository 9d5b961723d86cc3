"""The journal on real SQLite files in tmp_path, with a fake clock injected, not monkeypatched."""

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.jobs.progress import JobProgress
from daemon.service.journal import (
    Details,
    Dispatch,
    Event,
    JobState,
    Journal,
    JournalError,
    Painted,
)

FINGERPRINT = "f" * 16
PAINTED = Painted([64, 48], 25.0, {"total": 1.5}, 30, "cpu", 1, {"host": "h", "pid": 1})


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.time = start

    def __call__(self) -> float:
        return self.time


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "journal.sqlite3"


@pytest.fixture
def journal(path: Path, clock: FakeClock) -> Iterator[Journal]:
    with Journal(path, now=clock) as journal:
        yield journal


def _hash(n: int) -> str:
    """A stand-in sha256 hex digest, distinct per n."""
    return f"{n:064x}"


def _add(journal: Journal, n: int, fingerprint: str = FINGERPRINT) -> int:
    """Queue photo n and return its job id."""
    result = journal.add(_hash(n), "starry", fingerprint, f"/srv/inbox/{n}.jpg")
    assert result.created
    return result.job.id


def test_life_cycle_add_claim_done(journal: Journal, clock: FakeClock) -> None:
    result = journal.add(_hash(1), "starry", FINGERPRINT, "/srv/inbox/a.jpg")
    assert result.created
    job = result.job
    assert (job.state, job.attempts, job.enqueued_at, job.not_before) == (
        JobState.QUEUED,
        0,
        1_000.0,
        1_000.0,
    )
    assert journal.pending() == [job]

    clock.time = 1_005.0
    claimed = journal.claim_next()
    assert claimed is not None
    assert (claimed.id, claimed.state, claimed.attempts, claimed.started_at) == (
        job.id,
        JobState.RUNNING,
        1,
        1_005.0,
    )
    assert journal.running() == [claimed]
    assert journal.claim_next() is None

    clock.time = 1_030.0
    journal.mark_done(job.id, ["/srv/outbox/a-starry.jpg"], PAINTED)
    done = journal.get(job.id)
    assert done is not None
    assert done.state is JobState.DONE
    assert done.finished_at == 1_030.0
    assert done.outputs == ("/srv/outbox/a-starry.jpg",)
    assert done.details == Details(painted=PAINTED)
    assert journal.running() == []
    assert journal.find(_hash(1), FINGERPRINT) == done


def test_claims_follow_arrival_order(journal: Journal) -> None:
    ids = [_add(journal, n) for n in (3, 1, 2)]
    claimed = []
    while (job := journal.claim_next()) is not None:
        claimed.append(job.id)
    assert claimed == ids


def test_batch_candidates_are_queued_first_attempts_of_the_head_s_preset(
    journal: Journal, clock: FakeClock
) -> None:
    head, mate, retried, due_later, stopped, taken, last = (_add(journal, n) for n in range(7))
    journal.add(_hash(7), "wave", FINGERPRINT, "/srv/inbox/7.jpg")  # another preset
    for job_id in (retried, due_later):  # failed once each; one still waits out its backoff
        assert journal.claim(job_id) is not None
        journal.mark_retry(
            job_id, "disk full", not_before=clock.time + (0 if job_id == retried else 60)
        )
    journal.claim(stopped)
    journal.release(stopped)  # a stop: not an attempt, so it may share a batch again
    assert journal.claim(taken) is not None

    first = journal.claim_next()
    assert first is not None and first.id == head
    candidates = journal.batch_candidates(first, limit=10)
    assert [job.id for job in candidates] == [mate, stopped, last]
    assert [job.id for job in journal.batch_candidates(first, limit=2)] == [mate, stopped]
    assert all(job.state is JobState.QUEUED for job in candidates)  # looked at, not taken

    assert journal.claim(mate).attempts == 1
    assert journal.claim(mate) is None  # already running
    assert [job.id for job in journal.running()] == [head, mate, taken]


def test_planned_outputs_are_those_of_unfinished_jobs(journal: Journal, clock: FakeClock) -> None:
    done, retrying, running, queued = (_add(journal, n) for n in range(4))
    for job_id in (done, retrying, running):
        journal.claim(job_id)
        journal.set_planned_output(job_id, f"/srv/outbox/{job_id}.jpg")
    journal.mark_done(done, [f"/srv/outbox/{done}.jpg"], PAINTED)
    journal.mark_retry(retrying, "disk full", not_before=clock.time + 60)
    assert journal.planned_outputs() == {
        f"/srv/outbox/{retrying}.jpg",
        f"/srv/outbox/{running}.jpg",
    }
    assert journal.get(queued).planned_output is None


def test_claim_waits_out_the_backoff(journal: Journal, clock: FakeClock) -> None:
    first, second = _add(journal, 1), _add(journal, 2)
    assert journal.claim_next().id == first
    journal.mark_retry(first, "device out of memory", not_before=1_060.0)

    retried = journal.get(first)
    assert (retried.state, retried.error, retried.attempts) == (
        JobState.QUEUED,
        "device out of memory",
        1,
    )
    assert journal.next_wake_time() == 1_000.0  # the second job is due now
    assert journal.claim_next().id == second  # the first is still backing off
    assert journal.claim_next() is None
    assert journal.next_wake_time() == 1_060.0

    clock.time = 1_060.0
    again = journal.claim_next()
    assert (again.id, again.attempts) == (first, 2)
    assert journal.next_wake_time() is None


def test_duplicate_of_done_job_is_not_created(journal: Journal) -> None:
    job_id = _add(journal, 1)
    journal.claim_next()
    journal.mark_done(job_id, ["/srv/outbox/1.jpg"], PAINTED)

    again = journal.add(_hash(1), "starry", FINGERPRINT, "/srv/inbox/copy.jpg")
    assert not again.created
    assert (again.job.id, again.job.state) == (job_id, JobState.DONE)
    assert again.job.source_path == "/srv/inbox/1.jpg"


def test_pending_duplicate_is_not_created(journal: Journal) -> None:
    job_id = _add(journal, 1)
    queued = journal.add(_hash(1), "starry", FINGERPRINT, "/srv/inbox/copy.jpg")
    assert (queued.created, queued.job.id, queued.job.state) == (False, job_id, JobState.QUEUED)
    journal.claim_next()
    running = journal.add(_hash(1), "starry", FINGERPRINT, "/srv/inbox/copy.jpg")
    assert (running.created, running.job.state) == (False, JobState.RUNNING)
    assert journal.counts()[JobState.RUNNING] == 1


def test_changed_preset_is_a_new_job(journal: Journal) -> None:
    first = _add(journal, 1)
    second = _add(journal, 1, fingerprint="e" * 16)
    assert first != second
    assert [job.id for job in journal.pending()] == [first, second]


def test_re_adding_a_failed_job_queues_it_afresh(journal: Journal, clock: FakeClock) -> None:
    job_id = _add(journal, 1)
    journal.claim_next()
    journal.set_planned_output(job_id, "/srv/outbox/1-starry.jpg")
    journal.mark_failed(job_id, "disk full")

    clock.time = 2_000.0
    result = journal.add(_hash(1), "starry", FINGERPRINT, "/srv/inbox/again.jpg")
    assert result.created
    job = result.job
    assert job.id == job_id
    assert (job.state, job.attempts, job.error, job.planned_output) == (
        JobState.QUEUED,
        0,
        None,
        None,
    )
    assert (job.source_path, job.enqueued_at, job.not_before) == (
        "/srv/inbox/again.jpg",
        2_000.0,
        2_000.0,
    )
    assert journal.claim_next().id == job_id


def test_quarantined_job_stays_quarantined(journal: Journal) -> None:
    job_id = _add(journal, 1)
    journal.claim_next()
    journal.mark_quarantined(job_id, "cannot decode")

    result = journal.add(_hash(1), "starry", FINGERPRINT, "/srv/inbox/again.jpg")
    assert not result.created
    assert (result.job.state, result.job.error) == (JobState.QUARANTINED, "cannot decode")
    assert journal.claim_next() is None


def test_crash_leaves_running_job_which_start_up_requeues(path: Path, clock: FakeClock) -> None:
    with Journal(path, now=clock) as journal:
        job_id = _add(journal, 1)
        journal.claim_next()
        journal.set_planned_output(job_id, "/srv/outbox/1-starry.jpg")
    # Closed mid-job without finishing it: what a crash leaves behind.

    with Journal(path, now=clock) as journal:
        assert [job.id for job in journal.running()] == [job_id]
        assert journal.requeue_running() == 1
        job = journal.get(job_id)
        assert (job.state, job.attempts) == (JobState.QUEUED, 1)
        assert job.planned_output == "/srv/outbox/1-starry.jpg"
        assert journal.requeue_running() == 0
        assert journal.claim_next().attempts == 2


def test_release_does_not_count_the_attempt(journal: Journal) -> None:
    job_id = _add(journal, 1)
    journal.claim_next()
    journal.release(job_id)
    job = journal.get(job_id)
    assert (job.state, job.attempts, job.not_before) == (JobState.QUEUED, 0, 1_000.0)


def test_only_a_running_job_can_be_finished(journal: Journal) -> None:
    job_id = _add(journal, 1)
    with pytest.raises(JournalError, match=f"job {job_id} .* not running .*queued"):
        journal.mark_done(job_id, [], PAINTED)
    with pytest.raises(JournalError, match="no such job"):
        journal.release(job_id + 1)
    assert journal.get(job_id).state is JobState.QUEUED


def test_concurrent_claims_never_share_a_job(path: Path, clock: FakeClock) -> None:
    with Journal(path, now=clock) as journal:
        ids = [_add(journal, n) for n in range(50)]

    claims: list[list[int]] = [[] for _ in range(4)]
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def worker(mine: list[int]) -> None:
        # Each thread has its own Journal, i.e. its own connection, as a second process would.
        try:
            with Journal(path, now=clock) as own:
                start.wait()
                while (job := own.claim_next()) is not None:
                    mine.append(job.id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(mine,)) for mine in claims]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert sorted(job_id for mine in claims for job_id in mine) == ids
    with Journal(path, now=clock) as journal:
        assert journal.counts()[JobState.RUNNING] == 50
        assert {journal.get(job_id).attempts for job_id in ids} == {1}


def test_random_bytes_are_reported_as_corrupt(path: Path) -> None:
    path.write_bytes(os.urandom(8192))
    with pytest.raises(JournalError, match="corrupt") as caught:
        Journal(path)
    assert str(path) in str(caught.value)
    assert "move the file" in str(caught.value)


def test_damaged_pages_are_found_at_open(path: Path, clock: FakeClock) -> None:
    with Journal(path, now=clock) as journal:
        for n in range(12):  # long paths: a dozen commits fill several pages
            journal.add(_hash(n), "starry", FINGERPRINT, f"/srv/inbox/{n}-{'x' * 2000}.jpg")
    conn = sqlite3.connect(path)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with path.open("r+b") as file:  # keep page 1 (header, schema); overwrite the next ones
        file.seek(page_size)
        file.write(b"\xa5" * (4 * page_size))  # 0xa5 is no b-tree page type
    with pytest.raises(JournalError, match="corrupt") as caught:
        Journal(path, now=clock)
    assert str(path) in str(caught.value)


def test_newer_schema_is_refused(path: Path) -> None:
    Journal(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(JournalError, match="schema version 99"):
        Journal(path)


def test_unwritable_location_names_the_path(tmp_path: Path) -> None:
    (tmp_path / "not-a-folder").write_text("")
    path = tmp_path / "not-a-folder" / "journal.sqlite3"
    with pytest.raises(JournalError, match="cannot open") as caught:
        Journal(path)
    assert str(path) in str(caught.value)


def test_readonly_opener_never_creates_a_file(path: Path) -> None:
    with pytest.raises(JournalError, match="no journal") as caught:
        Journal.open_readonly(path)
    assert str(path) in str(caught.value)
    assert not path.exists()


def test_readonly_opener_follows_the_running_writer(journal: Journal, path: Path) -> None:
    for n in range(3):
        _add(journal, n)
    journal.claim_next()

    with Journal.open_readonly(path) as status:
        assert status.counts()[JobState.QUEUED] == 2
        assert len(status.running()) == 1
        _add(journal, 3)  # the writer carries on while the reader is open
        assert status.counts()[JobState.QUEUED] == 3
        with pytest.raises(JournalError, match="read-only"):
            status.add(_hash(9), "starry", FINGERPRINT, "/srv/inbox/9.jpg")


def test_readonly_opener_after_the_daemon_stopped(path: Path, clock: FakeClock) -> None:
    with Journal(path, now=clock) as journal:
        _add(journal, 1)
    with Journal.open_readonly(path) as status:
        assert status.counts()[JobState.QUEUED] == 1


def test_counts_list_every_state(journal: Journal) -> None:
    assert journal.counts() == dict.fromkeys(JobState, 0)
    done, failed, _ = _add(journal, 1), _add(journal, 2), _add(journal, 3)
    journal.claim_next()
    journal.mark_done(done, [], PAINTED)
    journal.claim_next()
    journal.mark_failed(failed, "gave up")
    assert journal.counts() == {
        JobState.QUEUED: 1,
        JobState.RUNNING: 0,
        JobState.DONE: 1,
        JobState.FAILED: 1,
        JobState.QUARANTINED: 0,
    }


def test_recent_failures_newest_first(journal: Journal, clock: FakeClock) -> None:
    ids = [_add(journal, n) for n in range(4)]
    for n, job_id in enumerate(ids):
        clock.time = 1_000.0 + n
        journal.claim_next()
        if n == 2:
            journal.mark_done(job_id, [], PAINTED)
        elif n % 2:
            journal.mark_quarantined(job_id, f"bad {n}")
        else:
            journal.mark_failed(job_id, f"failed {n}")
    assert [job.id for job in journal.recent_failures()] == [ids[3], ids[1], ids[0]]
    assert [job.error for job in journal.recent_failures(limit=1)] == ["bad 3"]


def test_planned_output_survives_reopen(path: Path, clock: FakeClock) -> None:
    with Journal(path, now=clock) as journal:
        job_id = _add(journal, 1)
        journal.claim_next()
        journal.set_planned_output(job_id, "/srv/outbox/1-starry.jpg")
    with Journal(path, now=clock) as journal:
        assert journal.get(job_id).planned_output == "/srv/outbox/1-starry.jpg"


def test_file_memo(journal: Journal) -> None:
    journal.remember_file("/srv/inbox/a.jpg", (1234, 5_000, 7_000), _hash(1))
    assert journal.known_hash("/srv/inbox/a.jpg", (1234, 5_000, 7_000)) == _hash(1)
    assert journal.known_hash("/srv/inbox/a.jpg", (1234, 5_001, 7_000)) is None  # touched since
    assert journal.known_hash("/srv/inbox/a.jpg", (1235, 5_000, 7_000)) is None  # grew since
    # rewritten keeping its size and mtime (`cp -p`): only the ctime tells
    assert journal.known_hash("/srv/inbox/a.jpg", (1234, 5_000, 7_001)) is None
    assert journal.known_hash("/srv/inbox/b.jpg", (1234, 5_000, 7_000)) is None

    journal.remember_file("/srv/inbox/a.jpg", (99, 6_000, 8_000), _hash(2))  # rewritten in place
    assert journal.known_hash("/srv/inbox/a.jpg", (99, 6_000, 8_000)) == _hash(2)
    assert journal.known_hash("/srv/inbox/a.jpg", (1234, 5_000, 7_000)) is None

    journal.remember_file("/srv/inbox/b.jpg", (7, 8_000, 9_000), _hash(3))
    assert sorted(journal.remembered_paths()) == ["/srv/inbox/a.jpg", "/srv/inbox/b.jpg"]
    journal.forget_files(["/srv/inbox/a.jpg", "/srv/inbox/never-seen.jpg"])
    assert journal.known_hash("/srv/inbox/a.jpg", (99, 6_000, 8_000)) is None
    assert journal.remembered_paths() == ["/srv/inbox/b.jpg"]
    journal.forget_files([])  # nothing gone: no transaction at all
    assert journal.known_hash("/srv/inbox/b.jpg", (7, 8_000, 9_000)) == _hash(3)


def test_a_journal_of_version_1_gains_the_events_tables_and_keeps_its_jobs(tmp_path) -> None:
    path = tmp_path / "journal.sqlite3"
    with Journal(path) as journal:
        journal.add("ab" * 32, "swirl", "f" * 64, "/inbox/a.jpg")
    with sqlite3.connect(path) as conn:  # what stylebox wrote before it had events
        conn.execute("DROP TABLE deliveries")
        conn.execute("DROP TABLE events")
        conn.execute("ALTER TABLE files DROP COLUMN ctime_ns")  # nor the memo's ctime (3)
        conn.execute("DROP TABLE skipped_files")  # nor the skipped videos (4)
        conn.execute("PRAGMA user_version = 1")
    with Journal(path) as journal:
        assert [job.source_path for job in journal.pending()] == ["/inbox/a.jpg"]
        journal.event_routes = lambda event_type: ("events_log",)
        journal.record_events([Event("e1", "daemon.started", 1.0, {"id": "e1"})])
        counts = journal.delivery_counts()["events_log"]
        assert (counts["pending"], counts["sent"], counts["given_up"]) == (1, 0, 0)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 4


def test_details_are_typed_records_kept_as_the_json_they_always_were(journal: Journal) -> None:
    """Progress and the latest sending while running; the result and the original once done;
    the column's JSON keeps the keys older versions wrote and read."""
    job_id = journal.add(_hash(7), "starry", FINGERPRINT, "/srv/inbox/7.jpg").job.id
    assert journal.claim_next() is not None
    progress = JobProgress(3, 40, 1.25e10, 2.0, 1_010.0, worker="gpu-1:42")
    journal.record_progress({job_id: progress})
    journal.note_dispatch([job_id], Dispatch("abc", 1_005.0, message="m-1"))
    running = journal.get(job_id)
    assert running is not None
    assert running.details == Details(progress=progress, dispatch=Dispatch("abc", 1_005.0, "m-1"))
    journal.mark_done(job_id, ["/srv/outbox/7.jpg"], PAINTED)
    journal.note_original(job_id, "/srv/outbox/originals/7.jpg")
    done = journal.get(job_id)
    assert done is not None
    assert done.details == Details(painted=PAINTED, original="/srv/outbox/originals/7.jpg")
    with sqlite3.connect(journal.path) as raw:
        (stored,) = raw.execute("SELECT details FROM jobs WHERE id = ?", (job_id,)).fetchone()
    assert json.loads(stored)["size"] == [64, 48] and json.loads(stored)["seconds"] == 25.0


def test_details_an_older_or_edited_row_holds_are_read_as_far_as_they_fit() -> None:
    assert Details.from_json(None) == Details()
    assert Details.from_json({"progress": {"evaluation": 1}}) == Details()  # budget missing
    assert Details.from_json({"original": 3, "dispatch": "x"}) == Details()
    seen = Details.from_json({"dispatch": {"id": "a", "sent_at": 1.0, "new_key": 2}})
    assert seen.dispatch == Dispatch("a", 1.0)


def test_a_name_that_is_not_utf8_is_kept_exactly_and_its_errors_readably(journal: Journal) -> None:
    """Legacy SMB, FTP and zip names: Python holds their bytes as lone surrogates, which SQLite
    text cannot take; the journal keeps the path's bytes and says errors with `\\xNN`."""
    name = os.fsdecode(b"/srv/inbox/caf\xe9 \xff.jpg")
    job_id = journal.add(_hash(9), "starry", FINGERPRINT, name).job.id
    journal.remember_file(name, (10, 20, 30), _hash(9))
    assert journal.known_hash(name, (10, 20, 30)) == _hash(9)
    assert journal.remembered_paths() == [name]
    claimed = journal.claim_next()
    assert claimed is not None and claimed.source_path == name
    assert os.fsencode(claimed.source_path) == b"/srv/inbox/caf\xe9 \xff.jpg"
    journal.mark_retry(job_id, f"{name}: OSError", 0.0)
    again = journal.get(job_id)
    assert again is not None and again.error == "/srv/inbox/caf\\xe9 \\xff.jpg: OSError"
    journal.forget_files([name])
    assert journal.remembered_paths() == []


def test_time_left_counts_the_later_stages_at_this_stage_pace() -> None:
    """The page's "at most ... left": this stage's rest plus the later stages' budgets, both at
    the pace of this stage's own evaluations, not the whole job's (the earlier, coarser stages
    ran four times faster an evaluation)."""
    second_of_three = JobProgress(
        10, 100, 1e10, 400.0, 0.0, stage=2, stages=3, stage_seconds=50.0, later_evaluations=400.0
    )
    assert second_of_three.seconds_left() == pytest.approx(5.0 * (90 + 400))
    one_scale = JobProgress(10, 100, 1e10, 20.0, 0.0)  # an older host's line: no stage time
    assert one_scale.seconds_left() == pytest.approx(2.0 * 90)
    assert JobProgress.from_dict(second_of_three.as_dict()) == second_of_three
