"""The web app manifest: the page installs as an app on a phone, and with `share_target` that
app is among the places a photo can be shared to ("Share -> stylebox" on Android), which posts
it to /share (Api.share_target) as a multipart form, into the inbox like any upload. Browsers
install only pages served over HTTPS (or from localhost): on a LAN, behind a reverse proxy."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

# What a phone's share sheet offers to send here: its photos, in the formats this install may
# read (a format it cannot is refused with 415, as any upload).
SHARED_TYPES = ["image/*", ".jpg", ".jpeg", ".png", ".heic", ".heif", ".webp", ".avif", ".dng"]
MANIFEST = {
    "name": "stylebox",
    "short_name": "stylebox",
    "description": "Photos painted in the style of a painting (Gatys et al.)",
    "id": "/",
    "start_url": "/",
    "scope": "/",
    "display": "standalone",
    "background_color": "#fbfaf7",
    "theme_color": "#1d3557",
    "icons": [
        {"src": "/static/icon-192.png", "sizes": "192x192", "type": "image/png"},
        {"src": "/static/icon-512.png", "sizes": "512x512", "type": "image/png"},
        {"src": "/static/icon.svg", "sizes": "any", "type": "image/svg+xml"},
    ],
    "share_target": {
        "action": "/share",
        "method": "POST",
        "enctype": "multipart/form-data",
        "params": {"files": [{"name": "file", "accept": SHARED_TYPES}]},
    },
}


def manifest(request: Request) -> Response:
    """/manifest.webmanifest."""
    return JSONResponse(
        MANIFEST,
        media_type="application/manifest+json",
        headers={"cache-control": "max-age=3600"},
    )
