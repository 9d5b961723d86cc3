"""The API's docs page, /api/v1/docs: Swagger UI 5 over /api/v1/openapi.json, from the files the
`fastapi-offline` package ships (Swagger UI's own bundle and CSS), served from memory: no CDN,
so it works on a LAN without the internet. FastAPI's own docs page loads them from a CDN and
starts them with an inline script, which the page's Content-Security-Policy forbids; here the
start is a script of its own (docs.js)."""

from __future__ import annotations

from functools import cache
from importlib import resources

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

ASSETS = {  # name -> media type; read from fastapi_offline's static folder
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
}
# Swagger UI draws its icons from data: URIs and sets styles from its script.
DOCS_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
START_SCRIPT = b"""\
"use strict";
// Swagger UI over this daemon's OpenAPI document; "Authorize" takes the token as a Bearer.
window.addEventListener("DOMContentLoaded", () => {
  window.ui = SwaggerUIBundle({
    url: "/api/v1/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
"""
PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>stylebox API</title>
<link rel="icon" href="/static/icon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/api/v1/docs/swagger-ui.css">
<script src="/api/v1/docs/swagger-ui-bundle.js" defer></script>
<script src="/api/v1/docs/docs.js" defer></script>
</head>
<body>
<p><a href="/">stylebox</a> · <a href="/api/v1/openapi.json">openapi.json</a></p>
<div id="swagger-ui"></div>
</body>
</html>
"""


@cache
def _assets() -> dict[str, tuple[bytes, str]]:
    """Swagger UI's files, read once, the first time the docs are asked for."""
    folder = resources.files("fastapi_offline") / "static"
    found = {name: ((folder / name).read_bytes(), kind) for name, kind in ASSETS.items()}
    found["docs.js"] = (START_SCRIPT, "text/javascript")
    return found


def docs_page(request: Request) -> Response:
    """The docs page."""
    return HTMLResponse(PAGE, headers={"content-security-policy": DOCS_POLICY})


def docs_asset(request: Request) -> Response:
    """One of Swagger UI's files, by name (never a path)."""
    found = _assets().get(request.path_params["name"])
    if found is None:
        raise HTTPException(404)
    content, media_type = found
    return Response(content, media_type=media_type, headers={"cache-control": "max-age=86400"})


def docs_routes() -> list[Route]:
    """The docs page and its files, left out of the OpenAPI document."""
    return [
        Route("/docs", docs_page, include_in_schema=False),
        Route("/docs/{name}", docs_asset, include_in_schema=False),
    ]
