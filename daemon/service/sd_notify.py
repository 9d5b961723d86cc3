"""systemd's sd_notify protocol, spoken directly: one datagram per message to $NOTIFY_SOCKET.

Why not a library: the protocol is a newline-joined list of `KEY=value` fields sent as one
datagram to an AF_UNIX socket (see sd_notify(3)); a dozen lines of stdlib do it, and a C binding
would be one more thing to install on a fresh offline machine. Every send is best effort: a failed
notify must never take the daemon down, so OSError is swallowed and reported as `False`. Nothing
here logs; the caller decides what is worth a log line.
"""

import os
import socket


def _address(socket_path: str) -> str:
    """Map $NOTIFY_SOCKET to a socket address; a leading '@' names Linux's abstract namespace."""
    if socket_path.startswith("@"):
        return "\0" + socket_path[1:]
    return socket_path


def notify(*fields: str) -> bool:
    """Send e.g. notify("READY=1", "STATUS=watching /srv/inbox") to $NOTIFY_SOCKET.

    Returns False (and raises nothing) when not under systemd or when the send fails.
    """
    notifier = Notifier()
    try:
        return notifier.send(*fields)
    finally:
        notifier.close()


class Notifier:
    """The service's handle on sd_notify: one lazily created socket, reused for every message."""

    def __init__(self, socket_path: str | None = None) -> None:
        """Use `socket_path`, or $NOTIFY_SOCKET when None; without either every call is a no-op."""
        if socket_path is None:
            socket_path = os.environ.get("NOTIFY_SOCKET")
        self._socket_path = socket_path
        self._socket: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        """Whether there is a notify socket to talk to (i.e. we run under systemd, Type=notify)."""
        return bool(self._socket_path)

    def send(self, *fields: str) -> bool:
        """Send the fields as one datagram; True when the kernel took it, False otherwise."""
        if not self._socket_path or not fields:
            return False
        message = "\n".join(fields).encode("utf-8")
        try:
            if self._socket is None:
                # Made on first use, not in __init__, so a Notifier outside systemd costs nothing;
                # close-on-exec (Python's default) keeps the fd out of child processes.
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._socket.sendto(message, _address(self._socket_path))
        except OSError:
            return False
        return True

    def ready(self, status: str) -> None:
        """Tell systemd start-up is done (a Type=notify unit is 'active' only from here)."""
        self.send("READY=1", f"STATUS={status}")

    def status(self, text: str) -> None:
        """Set the one-line status `systemctl status` shows."""
        self.send(f"STATUS={text}")

    def watchdog(self) -> None:
        """Pet the watchdog; call at least every `watchdog_interval_seconds()`."""
        self.send("WATCHDOG=1")

    def stopping(self) -> None:
        """Tell systemd an orderly stop has begun, so a slow drain is not mistaken for a hang."""
        self.send("STOPPING=1")

    def watchdog_interval_seconds(self) -> float | None:
        """How often to pet the watchdog: half of $WATCHDOG_USEC, as sd_watchdog_enabled(3) advises.

        None when no watchdog is asked for, when the value is malformed, or when $WATCHDOG_PID
        names another process (the variables were inherited, not meant for us).
        """
        usec = os.environ.get("WATCHDOG_USEC")
        if not usec:
            return None
        pid = os.environ.get("WATCHDOG_PID")
        try:
            if pid and int(pid) != os.getpid():
                return None
            period_usec = int(usec)
        except ValueError:
            return None
        if period_usec <= 0:
            return None
        return period_usec / 1_000_000 / 2

    def close(self) -> None:
        """Close the socket, if one was opened; a later send opens a new one."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None
