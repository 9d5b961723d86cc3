"""The security review's checks that need the real daemon or the real weights loader (SECURITY.md).

Confinement of the outbox's own folders and their modes are unit-tested in test_outbox.py; symlinks
to files, FIFOs and hostile names in the bad-input corpus of test_bad_inputs.py.
"""

import os
import pickle
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from daemon_harness import (
    REPO,
    daemon_env,
    drop,
    files_under,
    journal_rows,
    make_roots_of,
    photo_bytes,
    write_config,
)

from daemon.config import JOURNAL_NAME


def run_once(config: Path, *, umask: int = 0o022) -> subprocess.CompletedProcess:
    """`stylebox run --once` under `umask`, as a shell or a service manager would start it (its
    folders made first, as their user makes them)."""
    make_roots_of(config)
    return subprocess.run(
        [sys.executable, "-m", "daemon", "run", "--config", str(config), "--once"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=daemon_env(),
        preexec_fn=lambda: os.umask(umask),
    )


def test_a_symlinked_folder_in_the_inbox_is_never_entered(tmp_path: Path) -> None:
    """A link inside the inbox to a folder outside (a share user's `ln -s ~/private`) is moved to
    failed/ as a link; the photos it points at are not read, stylised or moved."""
    config = write_config(tmp_path)
    private = tmp_path / "private"
    secret = photo_bytes(0)
    drop(private / "secret.jpg", secret)
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "album").symlink_to(private, target_is_directory=True)
    drop(tmp_path / "inbox" / "ok.jpg", photo_bytes(1))

    run = run_once(config)
    assert run.returncode == 0, run.stderr
    outbox = tmp_path / "outbox"
    assert sorted(p.name for p in (outbox / "swirl").iterdir()) == ["ok.jpg", "ok.json"]
    assert (outbox / "failed" / "album").is_symlink()
    assert os.readlink(outbox / "failed" / "album") == str(private)
    assert files_under(private) == [private / "secret.jpg"]
    assert (private / "secret.jpg").read_bytes() == secret
    # Never queued: the journal has a job for ok.jpg alone.
    journal = tmp_path / "state" / JOURNAL_NAME
    assert [Path(row["source_path"]).name for row in journal_rows(journal)] == ["ok.jpg"]
    assert files_under(tmp_path / "inbox") == []


def test_what_the_daemon_makes_in_the_outbox_has_file_mode_whatever_the_umask(
    tmp_path: Path,
) -> None:
    """Outputs get output.file_mode by fchmod; the outbox's folders and the log file must
    follow it too, not the umask of whoever started the daemon (0077 in a careful shell would
    leave share users readable files in folders they cannot enter). The journal stays private."""
    config = write_config(tmp_path, output={"file_mode": "0640"})
    good, bad = tmp_path / "inbox" / "good.jpg", tmp_path / "inbox" / "bad.jpg"
    drop(good, photo_bytes(0))
    drop(bad, b"not a photo")
    for photo in (good, bad):
        os.chmod(photo, 0o640)  # originals keep their own mode: make it the expected one

    run = run_once(config, umask=0o077)
    assert run.returncode == 0, run.stderr
    outbox = tmp_path / "outbox"
    made = list(outbox.rglob("*"))  # the outbox itself is its user's (the daemon never makes it)
    assert {p.relative_to(outbox).as_posix() for p in made} >= {
        "swirl/good.jpg",
        "swirl/good.json",
        "failed/bad.jpg.error.json",
        "originals/good.jpg",
        "logs/stylebox.log",
    }
    modes = {p.relative_to(outbox).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in made}
    expected = {name: 0o750 if (outbox / name).is_dir() else 0o640 for name in modes}
    assert modes == expected
    journal = tmp_path / "state" / JOURNAL_NAME
    assert stat.S_IMODE(journal.stat().st_mode) & 0o077 == 0


class _Planted:
    """Unpickling this creates `marker`: proof that a weights file ran code when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


def test_torchvision_weights_from_the_cache_cannot_run_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`weights: torchvision` reads a cached file (the service has no network, so the cache is
    all it can use); whoever can write that cache must not get code run by the daemon."""
    from torchvision.models import VGG19_Weights

    from daemon.engine.vgg import load_vgg
    from daemon.errors import StyleboxError

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = (
        tmp_path
        / "torch"
        / "hub"
        / "checkpoints"
        / VGG19_Weights.IMAGENET1K_V1.url.rpartition("/")[2]
    )
    cached.parent.mkdir(parents=True)
    marker = tmp_path / "code-ran"
    cached.write_bytes(pickle.dumps(_Planted(marker)))

    with pytest.raises(StyleboxError):
        load_vgg("torchvision", ("relu1_1",), pooling="avg", device="cpu")
    assert not marker.exists()
