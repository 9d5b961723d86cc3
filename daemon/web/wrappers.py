"""What wraps every request to the page and the API: the security headers, the read token's
gate on reads, and one log line for an error no route expected. Pure ASGI, so that no response
is buffered the way Starlette's BaseHTTPMiddleware does."""

from __future__ import annotations

import traceback
from urllib.parse import urlencode

from loguru import logger
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from daemon.web.access import NEEDS_TOKEN, Access
from daemon.web.api import PREFIX

SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        b"connect-src 'self'; manifest-src 'self'; form-action 'self'; frame-ancestors 'none'; "
        b"base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
LOGGED_CHARACTERS = 200  # of a client's path or an error message, in a log line


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every response that does not set its own (a file's stricter
    policy), errors included; pure ASGI, so it never buffers a response the way Starlette's
    BaseHTTPMiddleware does."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers if scope["type"] == "http" else send)


class ReadGate:
    """With a read token configured, the page's reads need a session or a token too, as the
    API's do (Access.may_read): the gallery would show the photos to anyone otherwise. A page
    a browser asks for goes to the login form; anything else (an image, /metrics, the JSON) is
    401. Open still: the login form, /healthz for monitors, the script and styles the login
    form uses, the manifest (a browser fetches it without the cookie), and the API, which
    answers for itself with its own errors. Writes check for themselves (Access.require)."""

    OPEN = frozenset({"/login", "/healthz", "/manifest.webmanifest", PREFIX})
    OPEN_UNDER = ("/static/", PREFIX + "/")

    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app, self.access = app, access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._gated(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if self.access.may_read(request):
            await self.app(scope, receive, send)
            return
        if "text/html" in request.headers.get("accept", ""):
            asked = scope["path"] + (f"?{request.url.query}" if request.url.query else "")
            response: Response = RedirectResponse("/login?" + urlencode({"next": asked}), 303)
        else:
            headers = {"www-authenticate": "Bearer", "cache-control": "no-store"}
            response = PlainTextResponse(NEEDS_TOKEN + "\n", 401, headers=headers)
        await response(scope, receive, send)

    def _gated(self, method: str, path: str) -> bool:
        if method not in ("GET", "HEAD"):
            return False
        return path not in self.OPEN and not path.startswith(self.OPEN_UNDER)


class OneLineErrors:
    """The app's last word on an exception no route expected. Starlette has answered 500 by
    then and raises it again for the server to log, which uvicorn does with the whole traceback
    for every request: a client able to cause the fault could flood the log. Here it is one
    ERROR line a request, with the traceback (never local variables) only the first time a
    fault is seen at its place in the code, so a bug is still found and cannot be replayed
    into the log."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._seen: set[tuple[str, str, int]] = set()  # one per place in the code: bounded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            if scope["type"] != "http":
                raise
            place = _raised_at(exc)
            first = place not in self._seen
            self._seen.add(place)
            logger.opt(exception=exc if first else None).error(
                "web: {} {}: answered 500 ({}: {}){}",
                scope.get("method", "?"),
                _clipped(scope.get("path", "?")),
                type(exc).__name__,
                _clipped(str(exc)),
                "" if first else "; its traceback was logged the first time",
            )


def _raised_at(exc: BaseException) -> tuple[str, str, int]:
    """The exception's type and the file and line that raised it."""
    frames = traceback.extract_tb(exc.__traceback__)
    last = frames[-1] if frames else None
    return type(exc).__name__, last.filename if last else "?", (last.lineno or 0) if last else 0


def _clipped(text: str, most: int = LOGGED_CHARACTERS) -> str:
    """A client's text as a log line may hold it: a URL may be kilobytes long."""
    return text if len(text) <= most else f"{text[:most]}... ({len(text)} characters)"
