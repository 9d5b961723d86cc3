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
reads and nothing else, as a Bearer header or a login's session; with it, every read needs one
of the two tokens, the page's as the API's: someone who sets one to keep the photos private
would otherwise still find them in the gallery.
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
READS_ONLY = "the read token only reads: log in or send the token to act"
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
        self.read_token = read_token  # when set, every read needs it, the token or a session
        self._clock = clock
        self._secret = secrets.token_bytes(32)  # for CSRF values: new at each start
        self._sessions: dict[str, tuple[float, bool]] = {}  # id -> (when it ends, may it act)
        self._lock = threading.Lock()  # logins on the event loop, pages in the thread pool

    @property
    def read_only(self) -> bool:
        """No token configured: nobody may act."""
        return self.token is None

    @property
    def can_log_in(self) -> bool:
        """Some token is configured, so the login form has something to take."""
        return self.token is not None or self.read_token is not None

    def by_bearer(self, request: Request) -> bool:
        """An `Authorization: Bearer <token>` header with the token."""
        given = _bearer(request)
        return self.token is not None and given is not None and _same(given, self.token)

    def by_read_bearer(self, request: Request) -> bool:
        """An `Authorization: Bearer <read token>` header with the read token."""
        given = _bearer(request)
        return self.read_token is not None and given is not None and _same(given, self.read_token)

    def session(self, request: Request) -> str | None:
        """The request's session id, while that session is open (either token's)."""
        return self._session(request)[0]

    def _session(self, request: Request) -> tuple[str | None, bool]:
        """The request's open session's id and whether it may act; (None, False) without."""
        given = request.cookies.get(COOKIE, "")
        with self._lock:  # ids are 256 random bits: a lookup's timing tells nothing of them
            ends, acts = self._sessions.get(given, (0.0, False))
        return (given, acts) if ends > self._clock() else (None, False)

    def logged_in(self, request: Request) -> bool:
        """Whether this request may act (the page shows its buttons)."""
        return self.by_bearer(request) or self._session(request)[1]

    def may_read(self, request: Request) -> bool:
        """Whether this request may read: anyone without a read token; with one, either
        token or a session."""
        if self.read_token is None or self.by_bearer(request) or self.by_read_bearer(request):
            return True
        return self.session(request) is not None

    def log_in(self, given: str) -> str | None:
        """The login form's token: a new session's id for the cookie, one that may act for the
        token and only reads for the read token; None for anything else. Sessions that have
        ended are forgotten."""
        acts = self.token is not None and _same(given, self.token)
        if not acts and (self.read_token is None or not _same(given, self.read_token)):
            return None
        session, now = secrets.token_urlsafe(32), self._clock()
        with self._lock:
            self._sessions = {s: v for s, v in self._sessions.items() if v[0] > now}
            self._sessions[session] = (now + SESSION_SECONDS, acts)
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

    def require_read(self, request: Request) -> None:
        """Refuse a read (401) that `may_read` does not allow."""
        if not self.may_read(request):
            raise HTTPException(401, NEEDS_TOKEN, headers={"www-authenticate": "Bearer"})

    def _require(self, request: Request, csrf: str) -> None:
        if self.read_only:
            raise HTTPException(403, READ_ONLY)
        if self.by_bearer(request):
            return
        session, acts = self._session(request)
        if self.by_read_bearer(request) or (session is not None and not acts):
            raise HTTPException(403, READS_ONLY)
        if session is None:
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
