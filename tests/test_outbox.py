"""The outbox on real files in tmp_path (and /dev/shm, where it is another filesystem)."""

import errno
import json
import math
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
from daemon_harness import drop, journal_rows, photo_bytes, results, wait_for, write_config

from daemon import outbox as outbox_module
from daemon.config import JOURNAL_NAME
from daemon.outbox import (
    MAX_NAME_BYTES,
    TEMP_PREFIX,
    Delivery,
    Outbox,
    OutsideOutbox,
    atomic_write,
    fsync_dir,
    remove_stale_temps,
    safe_name,
)

HASH = "0123abcd" + "ef" * 28


def _writes(data: bytes) -> Callable[[BinaryIO], None]:
    """A write callback producing `data`."""

    def write(file: BinaryIO) -> None:
        file.write(data)

    return write


def _names(folder: Path) -> list[str]:
    """What a reader listing the folder would see, temps included."""
    return sorted(os.listdir(folder))


@pytest.fixture
def no_hard_links(monkeypatch: pytest.MonkeyPatch) -> None:
    """A filesystem that refuses link(2), as some SMB and FAT mounts do."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(outbox_module.os, "link", refuse)


@pytest.fixture(params=["hard links", "no hard links"])
def publishing(request: pytest.FixtureRequest) -> str:
    """Run a test both on a normal filesystem and on one without hard links."""
    if request.param == "no hard links":
        request.getfixturevalue("no_hard_links")
    return request.param


@pytest.fixture
def other_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A folder on a filesystem other than tmp_path's, or a skip."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("/dev/shm is missing or on the same filesystem as tmp_path")
    folder = Path(tempfile.mkdtemp(dir=shm))
    yield folder
    shutil.rmtree(folder)


# atomic_write


@pytest.mark.usefixtures("publishing")
def test_atomic_write_publishes_complete_content_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "out.bin"
    data = os.urandom(300_000)

    def write(file: BinaryIO) -> None:
        file.write(data[:1000])
        assert not path.exists(), "the name must not appear before the content is complete"
        file.write(data[1000:])

    assert atomic_write(path, write) == path
    assert path.read_bytes() == data
    assert _names(tmp_path) == ["out.bin"]


def test_atomic_write_removes_the_temp_when_write_raises(tmp_path: Path) -> None:
    def write(file: BinaryIO) -> None:
        file.write(b"half a photo")
        raise RuntimeError("encoder died")

    with pytest.raises(RuntimeError, match="encoder died"):
        atomic_write(tmp_path / "out.jpg", write)
    assert _names(tmp_path) == []


@pytest.mark.usefixtures("publishing")
def test_atomic_write_never_overwrites_without_replace(tmp_path: Path) -> None:
    path = tmp_path / "out.jpg"
    path.write_bytes(b"first")

    with pytest.raises(FileExistsError):
        atomic_write(path, _writes(b"second"))
    assert path.read_bytes() == b"first"
    assert _names(tmp_path) == ["out.jpg"]


def test_atomic_write_replaces_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "out.jpg"
    path.write_bytes(b"first")

    atomic_write(path, _writes(b"second"), replace=True)
    assert path.read_bytes() == b"second"
    assert _names(tmp_path) == ["out.jpg"]


@pytest.mark.parametrize("umask", [0o000, 0o077])
def test_file_mode_is_honoured_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        outbox = Outbox(tmp_path, file_mode=0o640)
        delivery = outbox.deliver(outbox.plan("oil", "a.jpg", HASH, "jpg"), _writes(b"x"), {})
        plain = atomic_write(tmp_path / "plain", _writes(b"x"), mode=0o604)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(delivery.image.stat().st_mode) == 0o640
    assert stat.S_IMODE(delivery.sidecar.stat().st_mode) == 0o640
    assert stat.S_IMODE(plain.stat().st_mode) == 0o604


def test_fsync_dir_ignores_only_unsupported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fsync_refusing(code: int) -> Callable[[int], None]:
        def fsync(fd: int) -> None:
            raise OSError(code, os.strerror(code))

        return fsync

    monkeypatch.setattr(outbox_module.os, "fsync", fsync_refusing(errno.EINVAL))
    fsync_dir(tmp_path)
    monkeypatch.setattr(outbox_module.os, "fsync", fsync_refusing(errno.EIO))
    with pytest.raises(OSError, match="Input/output error"):
        fsync_dir(tmp_path)


# names


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("..", "photo"),
        (".hidden.jpg", "hidden.jpg"),
        ("a/b.jpg", "b.jpg"),
        ("a\\b.jpg", "b.jpg"),
        ("x\x00y.jpg", "x_y.jpg"),
        ("line\nbreak\x7f.jpg", "line_break_.jpg"),
        ("bad\udcffbyte.jpg", "bad_byte.jpg"),
        ("", "photo"),
        ("IMG_0001.JPG", "IMG_0001.JPG"),
    ],
)
def test_safe_name(name: str, expected: str, tmp_path: Path) -> None:
    result = safe_name(name)
    assert result == expected
    assert (tmp_path / result).resolve().parent == tmp_path.resolve()


def test_safe_name_trims_long_unicode_names_keeping_the_extension() -> None:
    name = "é" * 200 + ".jpeg"  # 405 bytes of UTF-8
    result = safe_name(name)
    assert len(result.encode("utf-8")) <= MAX_NAME_BYTES
    assert result.endswith(".jpeg")
    assert set(result.removesuffix(".jpeg")) == {"é"}  # cut between characters, not inside one
    assert len(safe_name("ü" * 300).encode("utf-8")) <= MAX_NAME_BYTES


# plan


def test_plan_skips_names_whose_image_or_sidecar_exists(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox")

    first = outbox.plan("oil", "IMG_1.png", HASH, "jpg")
    assert first == (tmp_path / "outbox" / "oil" / "IMG_1.jpg").resolve()
    assert first.parent.is_dir()

    first.write_bytes(b"taken")
    second = outbox.plan("oil", "IMG_1.png", HASH, "jpg")
    assert second.name == "IMG_1-1.jpg"

    second.with_suffix(".json").write_text("{}")  # only the sidecar: the name is still taken
    assert outbox.plan("oil", "IMG_1.png", HASH, ".jpg").name == "IMG_1-2.jpg"


def test_plan_skips_names_reserved_for_unfinished_jobs(tmp_path: Path) -> None:
    """Two photos called IMG_1 in one batch, or one waiting out a retry: neither is on disk yet."""
    outbox = Outbox(tmp_path / "outbox")
    first = outbox.plan("oil", "IMG_1.png", HASH, "jpg")
    second = outbox.plan("oil", "album/IMG_1.jpg", HASH, "jpg", reserved={str(first)})
    assert second.name == "IMG_1-1.jpg"
    third = outbox.plan("oil", "IMG_1.jpg", HASH, "jpg", reserved={str(first), str(second)})
    assert third.name == "IMG_1-2.jpg"
    assert not first.exists() and not second.exists()
    # On a case-insensitive share img_1.jpg is IMG_1.jpg; planned as .png before a reload to jpeg,
    # IMG_1.png still owns IMG_1.json.
    for reserved in (first.with_name("img_1.JPG"), first.with_suffix(".png")):
        assert outbox.plan("oil", "IMG_1.jpg", HASH, "jpg", {str(reserved)}).name == "IMG_1-1.jpg"


def test_name_pattern_fields(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path, name_pattern="{preset}_{stem}_{hash8}")
    assert outbox.plan("oil", "../IMG_1.png", HASH, "jpg").name == "oil_IMG_1_0123abcd.jpg"


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("{stem}-{colour}", "unknown field {colour}"),
        ("{stem.upper}", "unknown field {stem.upper}"),
        ("{}", "unknown field {}"),
        ("{stem", "expected '}'"),
        ("{stem:d}", "Unknown format code 'd'"),
        ("{preset}/{stem}", "a name, not a path"),
    ],
)
def test_bad_name_pattern_is_refused_at_construction(
    tmp_path: Path, pattern: str, message: str
) -> None:
    with pytest.raises(ValueError, match="name_pattern") as raised:
        Outbox(tmp_path, name_pattern=pattern)
    assert message in str(raised.value)


@pytest.mark.parametrize("preset", ["../escape", "..", "a/b", "failed", "Failed", ""])
def test_plan_refuses_presets_that_are_not_a_plain_folder(tmp_path: Path, preset: str) -> None:
    with pytest.raises(ValueError, match="preset"):
        Outbox(tmp_path / "outbox").plan(preset, "a.jpg", HASH, "jpg")
    assert not (tmp_path / "escape").exists()


def test_plan_refuses_a_preset_folder_linked_outside(tmp_path: Path) -> None:
    root = tmp_path / "outbox"
    root.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (root / "oil").symlink_to(tmp_path / "elsewhere")

    with pytest.raises(OutsideOutbox, match="outside the outbox"):
        Outbox(root).plan("oil", "a.jpg", HASH, "jpg")


@pytest.mark.parametrize(("content_hash", "ext"), [("xyz", "jpg"), (HASH, "json"), (HASH, "j/pg")])
def test_plan_refuses_bad_hash_or_extension(tmp_path: Path, content_hash: str, ext: str) -> None:
    with pytest.raises(ValueError):
        Outbox(tmp_path).plan("oil", "a.jpg", content_hash, ext)


# deliver


def test_deliver_writes_image_and_sidecar(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    planned = outbox.plan("oil", "IMG_1.png", HASH, "jpg")
    sidecar = {"preset": "oil", "source": "IMG_1.png", "seconds": 1.5, "name": "Ünïcode"}

    delivery = outbox.deliver(planned, _writes(b"jpeg bytes"), sidecar)

    assert delivery == Delivery(image=planned, sidecar=planned.with_suffix(".json"))
    assert planned.read_bytes() == b"jpeg bytes"
    text = delivery.sidecar.read_text(encoding="utf-8")
    assert json.loads(text) == sidecar
    assert text == json.dumps(sidecar, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_deliver_again_after_a_crash_replaces_in_place(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    planned = outbox.plan("oil", "IMG_1.png", HASH, "jpg")
    outbox.deliver(planned, _writes(b"first try"), {"try": 1})

    delivery = outbox.deliver(planned, _writes(b"second try"), {"try": 2})

    assert delivery.image == planned
    assert planned.read_bytes() == b"second try"
    assert json.loads(delivery.sidecar.read_text()) == {"try": 2}
    assert _names(planned.parent) == ["IMG_1.jpg", "IMG_1.json"]


@pytest.mark.parametrize(
    ("sidecar", "error"), [({"x": object()}, TypeError), ({"x": math.nan}, ValueError)]
)
def test_deliver_publishes_nothing_when_the_sidecar_cannot_be_written(
    tmp_path: Path, sidecar: dict, error: type[Exception]
) -> None:
    outbox = Outbox(tmp_path)
    planned = outbox.plan("oil", "IMG_1.png", HASH, "jpg")
    with pytest.raises(error):
        outbox.deliver(planned, _writes(b"jpeg"), sidecar)
    assert _names(planned.parent) == []


# quarantine


@pytest.mark.usefixtures("publishing")
def test_quarantine_moves_the_photo_and_writes_the_error(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    outbox = Outbox(tmp_path / "outbox")
    failed = tmp_path / "outbox" / "failed"

    (inbox / "bad.jpg").write_bytes(b"not a jpeg")
    first = outbox.quarantine(inbox / "bad.jpg", {"error": "cannot decode"})
    assert first == Delivery(failed / "bad.jpg", failed / "bad.jpg.error.json")
    assert first.image.read_bytes() == b"not a jpeg"
    assert not (inbox / "bad.jpg").exists()
    assert json.loads(first.sidecar.read_text()) == {
        "error": "cannot decode",
        "source": str(inbox / "bad.jpg"),
        "source_missing": False,
    }

    (inbox / "bad.jpg").write_bytes(b"another")
    second = outbox.quarantine(inbox / "bad.jpg", {"error": "too many pixels"})
    assert second == Delivery(failed / "bad-1.jpg", failed / "bad-1.jpg.error.json")
    assert second.image.read_bytes() == b"another"
    assert first.image.read_bytes() == b"not a jpeg"
    assert json.loads(second.sidecar.read_text())["error"] == "too many pixels"

    (failed / "bad-1.jpg").unlink()  # only its error file left: the name is still taken
    (inbox / "bad.jpg").write_bytes(b"third")
    assert outbox.quarantine(inbox / "bad.jpg", {}).image == failed / "bad-2.jpg"
    assert _names(inbox) == []


def test_quarantine_moves_a_symlink_as_a_link(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"do not touch")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "link.jpg").symlink_to(secret)

    delivery = Outbox(tmp_path / "outbox").quarantine(inbox / "link.jpg", {"error": "symlink"})

    assert delivery.image.is_symlink()
    assert os.readlink(delivery.image) == str(secret)
    assert not os.path.lexists(inbox / "link.jpg")
    assert secret.read_bytes() == b"do not touch"


def test_quarantine_of_a_vanished_source_still_writes_the_error(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox")
    delivery = outbox.quarantine(tmp_path / "inbox" / "gone.jpg", {"error": "vanished"})

    assert not delivery.image.exists()
    assert json.loads(delivery.sidecar.read_text())["source_missing"] is True


def test_quarantine_leaves_the_photo_when_the_reason_cannot_be_written(tmp_path: Path) -> None:
    source = tmp_path / "bad.jpg"
    source.write_bytes(b"x")
    with pytest.raises(TypeError):
        Outbox(tmp_path / "outbox").quarantine(source, {"error": object()})
    assert source.read_bytes() == b"x"


# originals


def test_dispose_keep_and_delete(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox")
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"x")

    assert outbox.dispose_original(photo, "keep", None) is None
    assert photo.read_bytes() == b"x"
    assert outbox.dispose_original(photo, "delete", None) is None
    assert not photo.exists()
    assert outbox.dispose_original(photo, "delete", None) is None  # a second run after a crash


@pytest.mark.usefixtures("publishing")
def test_dispose_move_never_overwrites(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox")
    done = tmp_path / "done" / "2024"
    photo = tmp_path / "photo.jpg"

    photo.write_bytes(b"first")
    assert outbox.dispose_original(photo, "move", done) == done / "photo.jpg"
    photo.write_bytes(b"second")
    assert outbox.dispose_original(photo, "move", done) == done / "photo-1.jpg"

    assert (done / "photo.jpg").read_bytes() == b"first"
    assert (done / "photo-1.jpg").read_bytes() == b"second"
    assert not photo.exists()
    assert outbox.dispose_original(photo, "move", done) is None  # already moved: a retry
    assert _names(done) == ["photo-1.jpg", "photo.jpg"]


def test_dispose_refuses_bad_policy(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    with pytest.raises(ValueError, match="needs a folder"):
        outbox.dispose_original(tmp_path / "a.jpg", "move", None)
    with pytest.raises(ValueError, match="expected keep"):
        outbox.dispose_original(tmp_path / "a.jpg", "shred", None)  # type: ignore[arg-type]


def test_move_across_filesystems(tmp_path: Path, other_filesystem: Path) -> None:
    photo = other_filesystem / "photo.jpg"
    data = os.urandom(100_000)
    photo.write_bytes(data)
    os.chmod(photo, 0o600)
    os.utime(photo, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    done = tmp_path / "done"
    (done / "photo.jpg").parent.mkdir()
    (done / "photo.jpg").write_bytes(b"already here")

    moved = Outbox(tmp_path).dispose_original(photo, "move", done)

    assert moved == done / "photo-1.jpg"
    assert moved.read_bytes() == data
    assert (done / "photo.jpg").read_bytes() == b"already here"
    assert moved.stat().st_mtime_ns == 1_000_000_000_000_000_000
    assert stat.S_IMODE(moved.stat().st_mode) == 0o600
    assert not photo.exists()
    assert _names(done) == ["photo-1.jpg", "photo.jpg"]


def test_quarantine_across_filesystems_moves_a_symlink_as_a_link(
    tmp_path: Path, other_filesystem: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"do not copy me")
    (other_filesystem / "link.jpg").symlink_to(secret)

    delivery = Outbox(tmp_path / "outbox").quarantine(other_filesystem / "link.jpg", {})

    assert delivery.image.is_symlink()
    assert os.readlink(delivery.image) == str(secret)
    assert not os.path.lexists(other_filesystem / "link.jpg")
    assert _names(delivery.image.parent) == ["link.jpg", "link.jpg.error.json"]


# start-up


def test_remove_stale_temps_removes_only_temps(tmp_path: Path) -> None:
    (tmp_path / "oil").mkdir()
    (tmp_path / f"{TEMP_PREFIX}abc").write_bytes(b"")
    (tmp_path / "oil" / f"{TEMP_PREFIX}def").write_bytes(b"")
    (tmp_path / "oil" / f"{TEMP_PREFIX}link").symlink_to(tmp_path / "oil")
    (tmp_path / "oil" / "photo.jpg").write_bytes(b"")
    (tmp_path / "oil" / ".hidden").write_bytes(b"")
    (tmp_path / "oil" / "stylebox-tmp-x").write_bytes(b"")

    assert remove_stale_temps(tmp_path) == 3
    assert _names(tmp_path) == ["oil"]
    assert _names(tmp_path / "oil") == [".hidden", "photo.jpg", "stylebox-tmp-x"]


# -- confinement and modes of the folders the outbox makes ---------------------------------------


@pytest.mark.parametrize("folder", ["failed", "originals"])
def test_a_reserved_folder_linked_outside_receives_nothing(tmp_path: Path, folder: str) -> None:
    """Whoever can write in the outbox (share users, say) must not redirect quarantined photos,
    error files or originals out of it by making failed/ or originals/ a symlink; the photo then
    stays where it is (OutsideOutbox, the one refusal of every folder linked out of the outbox)."""
    root, elsewhere, inbox = tmp_path / "outbox", tmp_path / "elsewhere", tmp_path / "inbox"
    for path in (root, elsewhere, inbox):
        path.mkdir()
    (root / folder).symlink_to(elsewhere, target_is_directory=True)
    photo = inbox / "photo.jpg"
    photo.write_bytes(b"x")
    outbox = Outbox(root)

    with pytest.raises(OutsideOutbox, match="outside the outbox"):
        if folder == "failed":
            outbox.quarantine(photo, {"reason": "bad"})
        else:
            outbox.dispose_original(photo, "move", root / folder)
    assert _names(elsewhere) == []
    assert photo.read_bytes() == b"x"


def test_originals_may_be_configured_outside_the_outbox(tmp_path: Path) -> None:
    """originals.move_to outside the outbox is the operator's choice, not an escape."""
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"x")
    elsewhere = tmp_path / "archive"
    (tmp_path / "link").symlink_to(tmp_path, target_is_directory=True)
    moved = Outbox(tmp_path / "outbox").dispose_original(
        photo, "move", tmp_path / "link" / "archive"
    )
    assert moved is not None and (elsewhere / "photo.jpg").read_bytes() == b"x"


@pytest.mark.parametrize(
    ("umask", "file_mode", "folder_mode"),
    [(0o077, 0o644, 0o755), (0o000, 0o640, 0o750), (0o022, 0o600, 0o700)],
)
def test_folders_the_outbox_makes_follow_file_mode_whatever_the_umask(
    tmp_path: Path, umask: int, file_mode: int, folder_mode: int
) -> None:
    """Outputs get file_mode whatever the umask; their folders must too (file_mode with x where
    it has r), or under a strict umask share users get readable files in folders they cannot
    enter, and under umask 0 folders anyone can write to."""
    photo = tmp_path / "photo.jpg"
    root = tmp_path / "outbox"
    previous = os.umask(umask)
    try:
        outbox = Outbox(root, file_mode=file_mode)
        outbox.plan("oil", "a.jpg", HASH, "jpg")
        photo.write_bytes(b"bad")
        outbox.quarantine(photo, {})
        photo.write_bytes(b"done")
        outbox.dispose_original(photo, "move", root / "originals" / "2024")
    finally:
        os.umask(previous)
    for folder in ("", "oil", "failed", "originals", "originals/2024"):
        assert stat.S_IMODE((root / folder).stat().st_mode) == folder_mode, folder


def test_a_preset_folder_linked_out_of_the_outbox_holds_its_photos_in_the_inbox(
    tmp_path: Path, daemons
) -> None:
    """The real daemon: a share user made outbox/swirl a link to elsewhere. Nothing may be written
    there; the photo is not to blame (not quarantined) and a retry cannot fix a link (failed at
    once, in the inbox); once the operator replaces the link, touching the photo retries it."""
    config = write_config(tmp_path)
    inbox, outbox, elsewhere = tmp_path / "inbox", tmp_path / "outbox", tmp_path / "elsewhere"
    for folder in (outbox, elsewhere):
        folder.mkdir()
    (outbox / "swirl").symlink_to(elsewhere, target_is_directory=True)
    journal = tmp_path / "state" / JOURNAL_NAME
    daemon = daemons.start(config)
    daemon.wait_ready()
    data = photo_bytes(0)
    drop(inbox / "photo.jpg", data)

    def settled() -> list[dict]:
        rows = journal_rows(journal)
        return rows if rows and rows[0]["state"] not in ("queued", "running") else []

    [row] = wait_for(settled, "the job settled", daemon=daemon)
    assert (row["state"], row["attempts"]) == ("failed", 1), row
    assert f"{outbox / 'swirl'} resolves to {elsewhere}, outside the outbox" in row["error"]
    assert (inbox / "photo.jpg").read_bytes() == data
    assert not (outbox / "failed").exists()
    assert _names(elsewhere) == []

    (outbox / "swirl").unlink()  # the operator's fix; a restart would offer the photo again too
    os.utime(inbox / "photo.jpg")
    wait_for(
        lambda: [(r["state"], r["attempts"]) for r in journal_rows(journal)] == [("done", 1)],
        "the photo done once the link is gone",
        daemon=daemon,
    )
    assert results(outbox) == {"swirl": ["photo.jpg", "photo.json"]}
    assert _names(elsewhere) == []


def test_an_original_already_in_the_originals_folder_is_never_taken_for_its_own_copy(
    tmp_path: Path,
) -> None:
    """A half-finished move leaves a second name for the original; the original's own name in
    that folder is not one, or "finishing the move" would delete the only copy."""
    outbox = Outbox(tmp_path / "outbox")
    folder = tmp_path / "outbox" / "originals"
    folder.mkdir(parents=True)
    original = folder / "photo.jpg"
    original.write_bytes(b"the only copy")
    landed = outbox.dispose_original(original, policy="move", move_to=folder)
    assert landed is not None and landed.read_bytes() == b"the only copy"
