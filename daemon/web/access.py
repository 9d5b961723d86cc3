"""Who may act: the token (a Bearer header, or a session a login opens) and the checks that keep
another site's pages from acting with the user's cookie.

Without a token the page is read-only. A login opens a random session kept in memory (a
restart or a logout ends it; it lasts SESSION_SECONDS at most), sent as an HttpOnly,
SameSite=Strict cookie; the token itself never leaves the login form. A form action also needs
its session's CSRF value and, when the browser sends them, an Origin of this host and a
Sec-Fetch-Site of same-origin. Bearer requests carry no ambient credentials, so they need
neither. Every comparison is of bytes in constant time.

The API (/api/v1) takes the same token as a Bearer header. The page's script calls it with its
session instead, and then sends the CSRF value in the X-CSRF-Token header, which no form of
another site can set: a cookie alone never changes anything. A read token, when configured,
reads the API and nothing else; with it, the API's reads need one of the two tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.requests import Request

COOKIE = "stylebox_session"
CSRF_HEADER = "x-csrf-token"
READ_ONLY = "read-only: set web.token_file in the config to allow actions"
NEEDS_TOKEN = "log in first (or send Authorization: Bearer <token>)"
SESSION_SECONDS = 30 * 24 * 3600


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode())


class Access:
    """The token's checks and the open sessions; `token` None: read-only."""

    def __init__(
        self,
        token: str | None,
        *,
        read_token: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.token = token
        self.read_token = read_token  # when set, the API's reads need it, the token or a session
        self._clock = clock
        self._secret = secrets.token_bytes(32)  # for CSRF values: new at each start
        self._sessions: dict[str, float] = {}  # session id -> when it ends
        self._lock = threading.Lock()  # logins on the event loop, pages in the thread pool

    @property
    def read_only(self) -> bool:
        """No token configured: nobody may act."""
        return self.token is None

    def by_bearer(self, request: Request) -> bool:
        """An `Authorization: Bearer <token>` header with the token."""
        given = _bearer(request)
        return self.token is not None and given is not None and _same(given, self.token)

    def by_read_bearer(self, request: Request) -> bool:
        """An `Authorization: Bearer <read token>` header with the read token."""
        given = _bearer(request)
        return self.read_token is not None and given is not None and _same(given, self.read_token)

    def session(self, request: Request) -> str | None:
        """The request's session id, while that session is open."""
        given = request.cookies.get(COOKIE, "")
        with self._lock:  # ids are 256 random bits: a lookup's timing tells nothing of them
            ends = self._sessions.get(given)
        return given if ends is not None and ends > self._clock() else None

    def logged_in(self, request: Request) -> bool:
        """Whether this request may act (the page shows its buttons)."""
        return self.by_bearer(request) or self.session(request) is not None

    def check_token(self, given: str) -> bool:
        """The login form's token."""
        return self.token is not None and _same(given, self.token)

    def open_session(self) -> str:
        """A new session's id, for the cookie; sessions that have ended are forgotten."""
        session, now = secrets.token_urlsafe(32), self._clock()
        with self._lock:
            self._sessions = {s: e for s, e in self._sessions.items() if e > now}
            self._sessions[session] = now + SESSION_SECONDS
        return session

    def close_session(self, request: Request) -> None:
        """Log out: the session's cookie is worth nothing from now on."""
        session = self.session(request)
        with self._lock:
            self._sessions.pop(session or "", None)

    def csrf_for(self, request: Request) -> str:
        """The CSRF value a page gives its forms: its session's, "" without one."""
        session = self.session(request)
        if session is None:
            return ""
        return hmac.new(self._secret, session.encode(), hashlib.sha256).hexdigest()

    def require(self, request: Request, form: dict[str, str]) -> None:
        """Refuse an action (403 or 401, with why) unless the token allows it."""
        self._require(request, form.get("csrf", ""))

    def require_api_write(self, request: Request) -> None:
        """Refuse an API call that changes something unless the token allows it: the Bearer
        token, or the page's session with its CSRF value in the X-CSRF-Token header."""
        self._require(request, request.headers.get(CSRF_HEADER, ""))

    def require_api_read(self, request: Request) -> None:
        """Refuse an API read (401) when a read token is configured and the request has
        neither token nor a session; without a read token, reads are open, as the page's."""
        if self.read_token is None or self.by_read_bearer(request) or self.logged_in(request):
            return
        raise HTTPException(401, NEEDS_TOKEN, headers={"www-authenticate": "Bearer"})

    def _require(self, request: Request, csrf: str) -> None:
        if self.read_only:
            raise HTTPException(403, READ_ONLY)
        if self.by_bearer(request):
            return
        if self.by_read_bearer(request):
            raise HTTPException(403, "the read token only reads: send the token to act")
        if self.session(request) is None:
            raise HTTPException(401, NEEDS_TOKEN, headers={"www-authenticate": "Bearer"})
        require_same_origin(request)
        if not _same(csrf, self.csrf_for(request)):
            raise HTTPException(403, "this form is stale or from another site: reload the page")


def _bearer(request: Request) -> str | None:
    """The token of an `Authorization: Bearer` header, if there is one."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return given.strip() if scheme.lower() == "bearer" else None


def require_same_origin(request: Request) -> None:
    """403 when the browser says the request comes from another site (behind a reverse proxy,
    have it pass the Host header on)."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        raise HTTPException(403, "cross-site request refused")
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        raise HTTPException(403, "cross-site request refused")


def require_share_launch(request: Request) -> None:
    """403 unless the browser says it sent this itself (a share sheet: Sec-Fetch-Site `none`)
    or from this page (`same-origin`). A share target's form carries no CSRF value, so the
    Fetch Metadata the browser adds, which no page can forge, stands in for it: a request that
    does not say where it comes from is refused (every browser that installs web apps says)."""
    if request.headers.get("sec-fetch-site") not in ("same-origin", "none"):
        raise HTTPException(403, "cross-site request refused")
    origin = request.headers.get("origin")
    if origin not in (None, "null") and urlsplit(origin).netloc != request.headers.get("host"):
        raise HTTPException(403, "cross-site request refused")
