"""sd_notify against real AF_UNIX datagram sockets standing in for systemd."""

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.service.sd_notify import Notifier, notify


def _receive(server: socket.socket) -> list[str]:
    """One datagram, split into its fields."""
    return server.recv(4096).decode("utf-8").split("\n")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket in tmp_path and its path, as systemd would offer it."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.settimeout(1.0)
    sock.bind(str(path))
    yield sock, str(path)
    sock.close()


def test_messages_reach_the_socket(server: tuple[socket.socket, str]) -> None:
    sock, path = server
    notifier = Notifier(path)
    assert notifier.enabled

    notifier.ready("watching /srv/inbox")
    assert _receive(sock) == ["READY=1", "STATUS=watching /srv/inbox"]
    notifier.status("stylising é.jpg")
    assert _receive(sock) == ["STATUS=stylising é.jpg"]
    notifier.watchdog()
    assert _receive(sock) == ["WATCHDOG=1"]
    notifier.stopping()
    assert _receive(sock) == ["STOPPING=1"]
    notifier.close()


def test_one_socket_is_reused(server: tuple[socket.socket, str]) -> None:
    sock, path = server
    notifier = Notifier(path)
    notifier.watchdog()
    first = notifier._socket
    notifier.watchdog()
    assert first is not None and notifier._socket is first
    assert _receive(sock) == _receive(sock) == ["WATCHDOG=1"]
    notifier.close()
    assert notifier._socket is None


def test_socket_path_comes_from_the_environment(
    server: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = server
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert notify("READY=1", "STATUS=up") is True
    assert _receive(sock) == ["READY=1", "STATUS=up"]
    assert Notifier().enabled


def test_abstract_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"stylebox-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.settimeout(1.0)
    sock.bind("\0" + name)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        notifier = Notifier()
        notifier.ready("abstract")
        assert _receive(sock) == ["READY=1", "STATUS=abstract"]
        notifier.close()
    finally:
        sock.close()


def test_disabled_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    assert notify("READY=1") is False
    assert notifier.send("READY=1") is False
    notifier.ready("nobody listens")  # a no-op, not an error
    notifier.close()


def test_missing_socket_returns_false(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "absent.sock"))
    assert notifier.enabled
    assert notifier.send("READY=1") is False
    notifier.watchdog()  # swallowed, not raised
    notifier.close()


def test_watchdog_interval_is_half_the_period(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert Notifier().watchdog_interval_seconds() == 2.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert Notifier().watchdog_interval_seconds() == 2.0


def test_watchdog_for_another_process_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert Notifier().watchdog_interval_seconds() is None


@pytest.mark.parametrize("usec", [None, "", "0", "soon"])
def test_no_watchdog_asked(monkeypatch: pytest.MonkeyPatch, usec: str | None) -> None:
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    if usec is None:
        monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    else:
        monkeypatch.setenv("WATCHDOG_USEC", usec)
    assert Notifier().watchdog_interval_seconds() is None
