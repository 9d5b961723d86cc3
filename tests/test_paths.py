"""The one containment check (daemon/paths.py), on real folders and links."""

from pathlib import Path, PurePath

from daemon.paths import named_within, really_within


def test_a_name_with_dots_that_walk_out_is_not_within() -> None:
    assert named_within("/share/inbox/a/../b.jpg", "/share/inbox") == PurePath("/share/inbox/b.jpg")
    assert named_within("/share/inbox/../etc/passwd", "/share/inbox") is None
    assert named_within("/share/inboxes/x.jpg", "/share/inbox") is None  # a prefix is not a parent
    assert named_within("../share/inbox/x.jpg", "/share/inbox") is None


def test_a_link_out_of_the_folder_is_not_really_within(tmp_path: Path) -> None:
    inside, outside = tmp_path / "outbox", tmp_path / "elsewhere"
    inside.mkdir()
    outside.mkdir()
    (inside / "swirl").symlink_to(outside)
    (inside / "real").mkdir()
    assert really_within((inside / "real").resolve(), [inside])
    assert not really_within((inside / "swirl").resolve(), [inside])
    assert really_within((inside / "swirl").resolve(), [inside, outside])


def test_a_folder_reached_through_a_link_is_still_itself(tmp_path: Path) -> None:
    """A share mounted at a path with a link in it: the folder given is resolved too."""
    share = tmp_path / "share"
    (share / "inbox").mkdir(parents=True)
    (tmp_path / "mnt").symlink_to(share)
    photo = share / "inbox" / "a.jpg"
    photo.write_bytes(b"x")
    assert really_within(photo.resolve(), [tmp_path / "mnt" / "inbox"])
