"""The page's server: uvicorn in a thread of the daemon, on a socket bound here first, so that
a port in use is one clear log line (the daemon carries on without its page) and port 0 works.

uvicorn installs no signal handlers outside the main thread: SIGTERM stays the daemon's.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from loguru import logger

from daemon.service.journal import Journal
from daemon.service.loop import Running
from daemon.web.access import Access
from daemon.web.app import build_app
from daemon.web.uploads import remove_left_over

STOP_SECONDS = 2.0  # of the daemon's 10 s: open requests get this long, then are cut


class _ToLoguru(logging.Handler):
    """uvicorn's own log lines (it logs through the standard library) into the daemon's log."""

    def emit(self, record: logging.LogRecord) -> None:
        logger.opt(exception=record.exc_info).log(
            record.levelname if record.levelname in ("WARNING", "ERROR") else "DEBUG",
            "web: {}",
            record.getMessage(),
        )


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=64)


class _Page:
    """The server's parts, to stop in order."""

    def __init__(self, running: Running) -> None:
        web = running.config().web
        # both checked at start and at each reload (config.checks): here they are only read
        token, read_token = (
            path.read_text(encoding="utf-8").strip() if path else None
            for path in (web.token_file, web.read_token_file)
        )
        removed = remove_left_over(running.config())
        if removed:
            logger.info("web: removed {} upload(s) a stop cut short (never taken)", removed)
        try:
            self.sock = _bind(web.host, web.port)
        except OSError as exc:
            raise OSError(f"cannot listen on {web.listen}: {exc.strerror}") from exc
        try:
            self.journal = Journal.open_readonly(running.config().journal_path)
            uvicorn_log = logging.getLogger("uvicorn.error")
            uvicorn_log.handlers, uvicorn_log.propagate = [_ToLoguru()], False
            access = Access(token, read_token=read_token)
            app = build_app(running, self.journal, access)
        except BaseException:
            self.sock.close()
            raise
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                log_config=None,
                access_log=False,
                lifespan="off",
                loop="asyncio",
                http="h11",
                timeout_graceful_shutdown=STOP_SECONDS,
            )
        )
        # a daemon thread: a page stuck on a request must never hold up the daemon's exit
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name="web", daemon=True
        )
        self.thread.start()
        host, port = self.sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        mode = "read-only: no web.token_file" if token is None else "actions need the token"
        logger.info("web page at http://{}:{}/ ({})", shown, port, mode)
        if not web.loopback and token is None:
            logger.warning(
                "web page: {} is reachable from other machines and has no token: anyone who "
                "can reach it sees the photos' names and results (it stays read-only); set "
                "web.token_file, or listen on 127.0.0.1",
                web.listen,
            )
        if not web.loopback and not web.hosts:
            logger.warning(
                "web page: no web.hosts for {}: it answers to any host name, so a page "
                "elsewhere could read it through a DNS name rebound to this machine; list the "
                "names it is reached by (e.g. nas.local) in web.hosts",
                web.listen,
            )

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(STOP_SECONDS + 1)
        self.sock.close()
        self.journal.close()


@contextmanager
def serving(running: Running) -> Iterator[None]:
    """Serve the page while the daemon runs (an add-on of service.loop.Service). A page that
    cannot start is one error line: the daemon carries on without it."""
    if not running.config().web.enabled:
        yield
        return
    try:
        page = _Page(running)
    except Exception as exc:  # a port in use, the token file gone since the check, ...
        logger.error("web page: {}; the daemon runs without it", exc)
        page = None
    try:
        yield
    finally:
        if page is not None:
            page.stop()
