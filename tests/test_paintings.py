"""The paintings folder (issue 26): an image dropped there is a preset named after its file.

Real files throughout: paintings made by Pillow from the repository's styles/, sidecars written
as a user would, the real config loader, and the real daemon as a subprocess for what a running
daemon must do (take a painting dropped while it runs, report a bad one, let photos wait for a
painting that is not there). Tiny presets (32 px, 2 evaluations) keep each job about a second.
"""

import io
import json
import os
from pathlib import Path, PurePosixPath

import pytest
import yaml
from daemon_harness import (
    STYLES,
    drop,
    journal_rows,
    photo_bytes,
    stylebox,
    tiny_preset,
    wait_for,
    write_config,
)
from PIL import Image

from daemon.config import JOURNAL_NAME, ConfigErrors, load_config
from daemon.config.paintings import (
    PaintingRefused,
    PaintingsWatch,
    add_painting,
    preset_name_for,
    remove_painting,
    waiting_for,
)

TINY = {"size": 32, "steps": 2}  # a painting's sidecar for a job of about a second


def painting_bytes(style: str, *, format: str = "PNG", side: int = 64, tint: int = 0) -> bytes:
    """One of styles/ at `side` px, tinted by `tint` (another tint: other bytes, the same size)."""
    with Image.open(STYLES / style) as image:
        small = image.convert("RGB").resize((side, side))
    if tint:
        small = Image.blend(small, Image.new("RGB", small.size, (tint, 0, 255 - tint)), 0.3)
    buffer = io.BytesIO()
    small.save(buffer, format=format)
    return buffer.getvalue()


def put(path: Path, data: bytes) -> None:
    """Write a file whole and at once, as a copy that has finished."""
    temporary = path.with_name(f".{path.name}.part")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def config_with_paintings(folder: Path, **overrides) -> Path:
    """write_config's daemon config, with a paintings folder beside the inbox."""
    (folder / "paintings").mkdir(exist_ok=True)
    return write_config(folder, paintings=str(folder / "paintings"), **overrides)


def seen(config: Path) -> dict[str, dict]:
    """What `load_config` says of each painting, by file name."""
    return {p.file.name: p.as_dict() for p in load_config(config).paintings_seen}


# -- the folder read with the config ------------------------------------------------------------


def test_each_painting_is_a_preset_or_is_reported_and_the_config_loads_anyway(tmp_path) -> None:
    config = config_with_paintings(tmp_path)
    paintings = tmp_path / "paintings"
    put(paintings / "Starry Night (1889).png", painting_bytes("starry_night.jpg"))
    put(paintings / "wave.jpg", painting_bytes("great_wave.png", format="JPEG"))
    (paintings / "wave.yaml").write_text("# a quick one\nsize: 48\nsteps: 3\nbeta: 1e4\n")
    put(paintings / "ship.png", painting_bytes("shipwreck.jpg"))
    (paintings / "ship.yaml").write_text("size: 48\nbeta: -1\nstyle_scal: 2\n")
    put(paintings / "swirl.png", painting_bytes("the_scream.jpg"))  # the config has a swirl
    (paintings / "notes.txt").write_text("not a painting")
    whole = painting_bytes("the_scream.jpg", format="JPEG")
    put(paintings / "cut.jpg", whole[: len(whole) // 2])  # a copy under way
    put(paintings / ".hidden.png", painting_bytes("the_scream.jpg"))  # a temporary: not looked at

    loaded = load_config(config)

    assert list(loaded.presets) == ["swirl", "glass", "Starry_Night_1889", "wave"]
    wave = loaded.presets["wave"]
    assert (wave.settings.size, wave.settings.steps, wave.settings.beta) == (48, 3, 1e4)
    assert wave.styles[0].path == paintings / "wave.jpg"
    starry = loaded.presets["Starry_Night_1889"].settings
    assert (starry.size, starry.steps, starry.alpha, starry.beta) == (512, None, 1.0, 1000.0)
    assert loaded.presets["swirl"].styles[0].path == STYLES / "swirl.png"  # the config's wins
    found = {p.file.name: p for p in loaded.paintings_seen}
    assert set(found) == {
        "Starry Night (1889).png", "wave.jpg", "ship.png", "swirl.png", "notes.txt", "cut.jpg"
    }  # fmt: skip
    assert {name: p.state for name, p in found.items()} == {
        "Starry Night (1889).png": "preset",
        "wave.jpg": "preset",
        "ship.png": "refused",
        "swirl.png": "shadowed",
        "notes.txt": "refused",
        "cut.jpg": "incomplete",
    }
    sidecar = paintings / "ship.yaml"
    assert found["ship.png"].reason == (
        f"{sidecar}:2: beta: Input should be greater than or equal to 0, got -1; "
        f"{sidecar}:3: style_scal: unknown key; did you mean 'style_scale'?"
    )
    assert "config.yaml's preset 'swirl'" in found["swirl.png"].reason
    assert found["notes.txt"].reason.startswith("notes.txt: not an image")


def test_a_sidecar_that_is_not_yaml_or_names_the_style_is_cited_by_line(tmp_path) -> None:
    config = config_with_paintings(tmp_path)
    paintings = tmp_path / "paintings"
    for name in ("broken", "styled", "listed"):
        put(paintings / f"{name}.png", painting_bytes("great_wave.png"))
    (paintings / "broken.yaml").write_text("size: 48\nsteps: [2\n")
    (paintings / "styled.yaml").write_text("size: 48\nstyle: other.png\n")
    (paintings / "listed.yml").write_text("- size\n")

    reasons = {name: p["reason"] for name, p in seen(config).items()}

    assert reasons["broken.png"].startswith(f"{paintings / 'broken.yaml'}:3:1: invalid YAML")
    assert reasons["styled.png"] == (
        f"{paintings / 'styled.yaml'}:2: style: the painting beside this file is the style; "
        "remove the key"
    )
    assert reasons["listed.png"].startswith(f"{paintings / 'listed.yml'}:1: expected a mapping")


def test_a_painting_over_the_pixel_limit_or_named_by_nothing_is_refused(tmp_path) -> None:
    config = config_with_paintings(tmp_path, max_input_pixels=64 * 64)
    paintings = tmp_path / "paintings"
    put(paintings / "big.png", painting_bytes("great_wave.png", side=65))
    put(paintings / "(((.png", painting_bytes("great_wave.png"))
    put(paintings / "failed.png", painting_bytes("great_wave.png"))  # the outbox's own folder

    found = seen(config)

    assert found["big.png"]["state"] == "refused"
    assert "over the limit of 4,096 (max_input_pixels)" in found["big.png"]["reason"]
    assert found["(((.png"]["reason"] == "(((.png: no letter or digit in its name; rename the file"
    assert "reserved for the outbox's own folders" in found["failed.png"]["reason"]
    assert list(load_config(config).presets) == ["swirl", "glass"]


def test_two_paintings_with_one_name_give_it_once(tmp_path) -> None:
    config = config_with_paintings(tmp_path)
    paintings = tmp_path / "paintings"
    put(paintings / "Wave.png", painting_bytes("great_wave.png"))
    put(paintings / "wave.jpg", painting_bytes("great_wave.png", format="JPEG"))

    found = seen(config)

    assert found["Wave.png"]["state"] == "preset"
    assert found["wave.jpg"] == {
        "file": "wave.jpg",
        "preset": "wave",
        "state": "refused",
        "reason": "Wave.png already gives preset 'Wave'; rename one of them",
    }


def test_replacing_a_painting_changes_its_fingerprint_and_only_its(tmp_path) -> None:
    config = config_with_paintings(tmp_path)
    paintings = tmp_path / "paintings"
    put(paintings / "wave.png", painting_bytes("great_wave.png"))
    put(paintings / "ship.png", painting_bytes("shipwreck.jpg"))
    before = {name: p.fingerprint for name, p in load_config(config).presets.items()}

    put(paintings / "wave.png", painting_bytes("great_wave.png", tint=90))
    after = {name: p.fingerprint for name, p in load_config(config).presets.items()}

    assert after["wave"] != before["wave"]
    assert {n: f for n, f in after.items() if n != "wave"} == {
        n: f for n, f in before.items() if n != "wave"
    }


def test_the_name_of_a_painting_is_a_safe_folder_name() -> None:
    assert preset_name_for("Starry Night (1889)") == "Starry_Night_1889"
    assert preset_name_for("Café Terrace") == "Cafe_Terrace"
    assert preset_name_for("../../etc/passwd") == "etc_passwd"
    assert preset_name_for("..") == ""
    assert len(preset_name_for("a" * 100)) == 64


def test_paintings_inside_the_inbox_are_refused(tmp_path) -> None:
    config = write_config(tmp_path, paintings=str(tmp_path / "inbox" / "paintings"))
    with pytest.raises(ConfigErrors) as raised:
        load_config(config)
    assert "paintings: inside inbox" in str(raised.value)


def test_a_missing_paintings_folder_is_refused_by_check_only(tmp_path) -> None:
    config = write_config(tmp_path, paintings=str(tmp_path / "nowhere"))
    assert load_config(config).paintings_seen == ()
    checked = stylebox("check", "--config", config)
    assert checked.returncode == 2
    assert f"paintings: {tmp_path / 'nowhere'}: no such folder" in checked.stderr


def test_photos_in_a_folder_with_no_preset_wait_for_its_painting(tmp_path) -> None:
    without = load_config(write_config(tmp_path, name="plain.yaml"))
    config = load_config(config_with_paintings(tmp_path))
    with_rule = load_config(
        config_with_paintings(
            tmp_path,
            routing={
                "default_preset": "swirl",
                "rules": [{"pattern": "trip/*", "preset": "glass"}],
            },
        )
    )

    assert waiting_for(config, PurePosixPath("monet", "a.jpg")) == "monet"
    assert waiting_for(config, PurePosixPath("glass", "a.jpg")) is None  # a preset's folder
    assert waiting_for(config, PurePosixPath("a.jpg")) is None  # the inbox itself: routing's
    assert waiting_for(with_rule, PurePosixPath("trip", "a.jpg")) is None  # a rule takes it
    assert waiting_for(without, PurePosixPath("monet", "a.jpg")) is None  # no paintings folder


# -- the daemon's look at the folder -------------------------------------------------------------


def test_the_watch_asks_for_one_reload_per_settled_change(tmp_path) -> None:
    folder = tmp_path / "paintings"
    folder.mkdir()
    watch = PaintingsWatch(folder, now=0.0)
    due = lambda now: watch.due(folder, now, poll_seconds=1.0, settle_seconds=2.0)  # noqa: E731

    assert not due(1.0)  # nothing changed
    (folder / "wave.png").write_bytes(b"part")
    assert not due(1.5)  # not yet looked at again
    assert not due(2.0)  # changed: seen, not yet settled
    (folder / "wave.png").write_bytes(b"part and more")
    assert not due(3.0)  # still changing
    assert not due(4.0)  # the same for 1 s
    assert due(5.0)  # the same for 2 s: reload
    assert not due(6.0) and not due(9.0)  # once
    (folder / ".wave.png.part").write_bytes(b"a temporary")
    assert not due(10.0) and not due(13.0)  # dotfiles are not looked at
    (folder / "wave.png").unlink()
    assert not due(14.0)
    assert due(16.0)


# -- written from code (the web API) -------------------------------------------------------------


def test_add_painting_writes_a_checked_painting_and_its_sidecar_atomically(tmp_path) -> None:
    config = load_config(config_with_paintings(tmp_path))
    paintings = tmp_path / "paintings"

    path = add_painting(config, "Great Wave", painting_bytes("great_wave.png"), {"size": 48})

    assert path == paintings / "Great_Wave.png"
    assert yaml.safe_load((paintings / "Great_Wave.yaml").read_text()) == {"size": 48}
    assert sorted(p.name for p in paintings.iterdir()) == ["Great_Wave.png", "Great_Wave.yaml"]
    reloaded = load_config(config.path)
    assert reloaded.presets["Great_Wave"].settings.size == 48

    # The same name again, as a JPEG and without overrides: the old file and sidecar go.
    again = add_painting(reloaded, "great_wave", painting_bytes("shipwreck.jpg", format="JPEG"))
    assert again == paintings / "great_wave.jpg"
    assert sorted(p.name for p in paintings.iterdir()) == ["great_wave.jpg"]
    assert load_config(config.path).presets["great_wave"].settings.size == 512


@pytest.mark.parametrize(
    ("name", "data", "overrides", "what", "message"),
    [
        ("wave", b"not an image at all", None, "image", "wave: not an image"),
        ("wave", b"", None, "image", "empty file"),
        ("Swirl", None, None, "taken", "'Swirl' is a preset of config.yaml"),
        ("...", None, None, "name", "no letter or digit"),
        ("wave", None, {"style": "x.png"}, "overrides", "style: the painting is the style"),
        ("wave", None, {"beta": -1, "sise": 9}, "overrides", "beta: Input should be greater"),
    ],
)
def test_add_painting_refuses_and_writes_nothing(
    tmp_path, name, data, overrides, what, message
) -> None:
    config = load_config(config_with_paintings(tmp_path))
    data = painting_bytes("great_wave.png") if data is None else data

    with pytest.raises(PaintingRefused) as raised:
        add_painting(config, name, data, overrides)

    assert raised.value.what == what
    assert message in str(raised.value)
    assert list((tmp_path / "paintings").iterdir()) == []


def test_remove_painting_removes_only_a_painting_and_its_sidecar(tmp_path) -> None:
    config = load_config(config_with_paintings(tmp_path))
    paintings = tmp_path / "paintings"
    put(paintings / "wave.png", painting_bytes("great_wave.png"))
    (paintings / "wave.yaml").write_text("size: 48\n")
    put(paintings / "ship.png", painting_bytes("shipwreck.jpg"))
    config = load_config(config.path)

    assert remove_painting(config, "wave") == [paintings / "wave.png", paintings / "wave.yaml"]
    assert sorted(p.name for p in paintings.iterdir()) == ["ship.png"]
    for name, what in (("wave", "missing"), ("swirl", "taken"), ("../ship", "name")):
        with pytest.raises(PaintingRefused) as raised:
            remove_painting(config, name)
        assert raised.value.what == what
    assert (paintings / "ship.png").exists()
    unset = load_config(write_config(tmp_path, name="plain.yaml"))
    with pytest.raises(PaintingRefused) as raised:
        remove_painting(unset, "ship")
    assert raised.value.what == "no_folder"


# -- the running daemon -------------------------------------------------------------------------


def wait_result(daemon, outbox: Path, preset: str, stem: str) -> dict:
    """Wait for a photo's result and its sidecar in the outbox; the sidecar."""
    done = [outbox / preset / f"{stem}.jpg", outbox / preset / f"{stem}.json"]
    wait_for(lambda: all(path.exists() for path in done), f"{preset}/{stem}", daemon=daemon)
    return json.loads(done[1].read_text(encoding="utf-8"))


def status(config: Path) -> dict:
    """`stylebox status --json`, parsed."""
    run = stylebox("status", "--config", config, "--json")
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_the_running_daemon_takes_reports_replaces_and_drops_paintings(tmp_path, daemons) -> None:
    config = config_with_paintings(tmp_path, presets={"swirl": tiny_preset(size=32, steps=2)})
    inbox, outbox, paintings = tmp_path / "inbox", tmp_path / "outbox", tmp_path / "paintings"
    journal = tmp_path / "state" / JOURNAL_NAME
    put(paintings / "swirl.png", painting_bytes("the_scream.jpg"))  # the config's swirl wins
    daemon = daemons.start(config)
    daemon.wait_ready()

    # A photo for a painting not there yet waits, said in status with its reason.
    drop(inbox / "wave" / "first.jpg", photo_bytes(0))
    daemon.wait_for_log("waiting for painting wave")
    report = status(config)["paintings"]
    assert report["waiting"] == [
        {
            "painting": "wave",
            "photos": 1,
            "reason": f"waiting for painting wave: no painting of that name in {paintings}",
        }
    ]
    assert report["found"] == [
        {
            "file": "swirl.png",
            "preset": "swirl",
            "state": "shadowed",
            "reason": "config.yaml's preset 'swirl' has this name and wins",
        }
    ]
    assert journal_rows(journal) == []

    # The painting dropped (its sidecar first): the waiting photo is painted with it, its size.
    (paintings / "wave.yaml").write_text(yaml.safe_dump(TINY))
    put(paintings / "wave.png", painting_bytes("great_wave.png"))
    assert wait_result(daemon, outbox, "wave", "first")["preset"] == "wave"
    with Image.open(outbox / "wave" / "first.jpg") as result:
        assert max(result.size) == 32

    # A bad painting is reported, and the daemon goes on.
    (paintings / "bad.png").write_text("not an image")
    reloads = daemon.count("config reloaded")
    daemon.wait_for_log("painting bad.png refused: bad.png: not an image")
    found = {p["file"]: p for p in status(config)["paintings"]["found"]}
    assert found["bad.png"]["state"] == "refused"
    assert found["bad.png"]["reason"].startswith("bad.png: not an image")
    assert found["wave.png"]["state"] == "preset"
    assert daemon.count("config reloaded") > reloads

    # Replaced: a new fingerprint for the photos that come after; the first is not redone.
    put(paintings / "wave.png", painting_bytes("great_wave.png", tint=120))
    daemon.wait_for_log("config reloaded", times=daemon.count("config reloaded") + 1)
    drop(inbox / "wave" / "second.jpg", photo_bytes(1))
    wait_result(daemon, outbox, "wave", "second")
    rows = {Path(row["source_path"]).name: row for row in journal_rows(journal)}
    assert set(rows) == {"first.jpg", "second.jpg"}
    assert rows["first.jpg"]["fingerprint"] != rows["second.jpg"]["fingerprint"]

    # Removed: its preset goes, and a photo for it waits in place, not quarantined.
    (paintings / "wave.png").unlink()
    daemon.wait_for_log("painting wave.png gone: preset wave with it")
    drop(inbox / "wave" / "third.jpg", photo_bytes(2))
    daemon.wait_for_log("wave/third.jpg: waiting for painting wave")
    report = status(config)["paintings"]
    assert report["waiting"][0]["photos"] == 1
    assert (inbox / "wave" / "third.jpg").exists()
    assert not (outbox / "failed").exists()
    assert len(journal_rows(journal)) == 2

    # A photo for the config's swirl still goes to it, and is done.
    drop(inbox / "swirl" / "fourth.jpg", photo_bytes(3))
    wait_result(daemon, outbox, "swirl", "fourth")
    text = stylebox("status", "--config", config)
    assert f"paintings in {paintings}: no preset" in text.stdout
    assert "painting bad.png refused: bad.png: not an image" in text.stdout
    assert "1 photo in wave/: waiting for painting wave" in text.stdout
    assert daemon.levels()["ERROR"] == 0
    assert daemon.process.poll() is None
