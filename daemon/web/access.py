"""Who may act: the token (a Bearer header, or the cookie a login sets) and the checks that keep
another site's pages from acting with the user's cookie.

Without a token the page is read-only. The cookie holds an HMAC of the token, never the token,
and is SameSite=Strict; a form action also needs the page's CSRF value and, when the browser
sends them, an Origin of this host and a Sec-Fetch-Site of same-origin. Bearer requests carry
no ambient credentials, so they need neither.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.requests import Request

COOKIE = "stylebox_session"


class Access:
    """The token's checks; `token` None: read-only."""

    def __init__(self, token: str | None) -> None:
        self.token = token
        self.session = self._derived(b"session")
        self.csrf = self._derived(b"csrf")

    def _derived(self, purpose: bytes) -> str:
        """A value made from the token for one purpose; "" without a token (never matched:
        every check asks for a token first)."""
        if self.token is None:
            return ""
        return hmac.new(self.token.encode(), b"stylebox " + purpose, hashlib.sha256).hexdigest()

    @property
    def read_only(self) -> bool:
        """No token configured: nobody may act."""
        return self.token is None

    def by_bearer(self, request: Request) -> bool:
        """An `Authorization: Bearer <token>` header with the token."""
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return (
            self.token is not None
            and scheme.lower() == "bearer"
            and hmac.compare_digest(given.strip().encode(), self.token.encode())
        )

    def by_cookie(self, request: Request) -> bool:
        """The session cookie a login set."""
        given = request.cookies.get(COOKIE, "")
        return self.token is not None and hmac.compare_digest(given, self.session)

    def logged_in(self, request: Request) -> bool:
        """Whether this request may act (the page shows its buttons)."""
        return self.by_bearer(request) or self.by_cookie(request)

    def check_token(self, given: str) -> bool:
        """The login form's token."""
        return self.token is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def require(self, request: Request, form: dict[str, str]) -> None:
        """Refuse an action (403 or 401, with why) unless the token allows it."""
        if self.read_only:
            raise HTTPException(403, "read-only: set web.token_file in the config to allow actions")
        if self.by_bearer(request):
            return
        if not self.by_cookie(request):
            raise HTTPException(401, "log in first (or send Authorization: Bearer <token>)")
        require_same_origin(request)
        if not hmac.compare_digest(form.get("csrf", ""), self.csrf):
            raise HTTPException(403, "this form is stale or from another site: reload the page")


def require_same_origin(request: Request) -> None:
    """403 when the browser says the request comes from another site."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        raise HTTPException(403, "cross-site request refused")
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        raise HTTPException(403, "cross-site request refused")
