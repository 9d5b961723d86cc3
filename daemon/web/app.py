"""The page's routes: HTML rendered on the server (Jinja2, autoescaped), one small script that
swaps the live part of the dashboard every few seconds, and the JSON, metrics and health that
machines read.

Files are served by job id or preset name, never by a path taken from the URL, and each one's
real path must lie inside the outbox, the thumbnail cache or the previews folder (web/files.py):
a `..`, an encoded `%2e%2e`, an absolute path or a link out of those folders reaches nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import time
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

import jinja2
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp

from daemon import __version__
from daemon.cluster.status import workers
from daemon.config import Config
from daemon.engine.settings import FULL_SIZE, StyleSettings
from daemon.jobs.previews import preview_path
from daemon.jobs.progress import JobProgress
from daemon.outbox import OutsideOutbox, real_file_within
from daemon.paths import shown
from daemon.service import failed, pause
from daemon.service.journal import Job, JobState, Journal
from daemon.service.loop import Running
from daemon.service.status import read_status
from daemon.service.thumbnails import Thumbnails
from daemon.web.access import (
    COOKIE,
    READ_ONLY,
    SESSION_SECONDS,
    Access,
    require_same_origin,
)
from daemon.web.api import PREFIX, Api
from daemon.web.files import file_response, open_inside
from daemon.web.manifest import manifest
from daemon.web.wrappers import OneLineErrors, ReadGate, SecurityHeaders

PAGE_SIZE = 24  # gallery cards per page
FORM_LIMIT_BYTES = 16 * 1024
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]
_STATIC_TYPES = {
    ".css": "text/css",
    ".js": "text/javascript",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
_DEFAULTS = StyleSettings()
MAX_PATH_NUMBER = 2**63 - 1  # SQLite's largest integer
_PATH_NUMBER = re.compile(r"[0-9]{1,19}")  # ASCII only: int() also reads other scripts' digits


def _static_files() -> dict[str, tuple[bytes, str]]:
    """The page's assets, read once from the package: served from memory by name, so no
    request path ever becomes a file path."""
    folder = resources.files("daemon.web") / "static"
    return {
        item.name: (item.read_bytes(), _STATIC_TYPES[Path(item.name).suffix])
        for item in folder.iterdir()
        if Path(item.name).suffix in _STATIC_TYPES
    }


def duration(seconds: float | None) -> str:
    """1.2 s, 45 s, 3m05s, 1h02m: short enough for a phone's line."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def clock_time(timestamp: float | None) -> str:
    """A moment in the server's local time."""
    if timestamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("daemon.web", "templates"),
        autoescape=True,  # every name a user gave a file is text, never markup
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["duration"] = duration
    environment.filters["clock"] = clock_time
    return environment


def path_number(request: Request, name: str) -> int:
    """A number in the URL's path (a job id, a painting's index), or 404: only ASCII digits,
    and only what SQLite's integers hold, so that no id from outside reaches the journal as
    something it cannot bind."""
    text = request.path_params[name]
    if not _PATH_NUMBER.fullmatch(text) or int(text) > MAX_PATH_NUMBER:
        raise HTTPException(404)
    return int(text)


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (the first of each), at most FORM_LIMIT_BYTES of it."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_LIMIT_BYTES:
            raise HTTPException(413, "form too large")
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


class Site:
    """The routes over one running daemon; `journal` is the page's own read-only connection,
    `running.journal` the daemon's, used only by the retry."""

    def __init__(self, running: Running, journal: Journal, access: Access) -> None:
        self.running = running
        self.journal = journal
        self.access = access
        self.thumbnails = Thumbnails(self.config.state_dir)
        self.static = _static_files()
        self.templates = _environment()

    @property
    def config(self) -> Config:
        """The daemon's config now: a reload may have changed its presets."""
        return self.running.config()

    def routes(self) -> list[Route]:
        """Every URL the page answers."""
        return [
            Route("/", self.dashboard),
            Route("/gallery", self.gallery),
            Route("/view/{job_id}", self.view),
            Route("/manifest.webmanifest", manifest),
            Route("/failed", self.failed),
            Route("/presets", self.presets),
            Route("/login", self.login_form),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/pause", self.pause, methods=["POST"]),
            Route("/resume", self.resume, methods=["POST"]),
            Route("/failed/retry", self.retry, methods=["POST"]),
            Route("/api/status", self.api_status),
            Route("/metrics", self.metrics),
            Route("/healthz", self.healthz),
            Route("/static/{name}", self.static_file),
            # Numbers in a path are read by path_number, not by Starlette's `:int`, which
            # takes ids SQLite cannot hold and raises on a few thousand digits (a 500 each).
            Route("/previews/{job_id}.jpg", self.preview),
            Route("/thumbs/{job_id}/{kind}.jpg", self.job_thumbnail),
            Route("/thumbs/preset/{name}/{index}.jpg", self.painting_thumbnail),
            Route("/files/{job_id}/{kind}", self.job_file),
        ]

    # -- pages ----------------------------------------------------------------------------------

    def _page(self, request: Request, template: str, status_code: int = 200, **values: Any):
        values = {
            "page": template.removesuffix(".html"),
            "version": __version__,
            "read_only": self.access.read_only,
            "can_log_in": self.access.can_log_in,
            "logged_in": self.access.logged_in(request),
            "session": self.access.session(request) is not None,
            "csrf": self.access.csrf_for(request),
            "paused": pause.is_paused(self.config),
            **values,
        }
        html = self.templates.get_template(template).render(values)
        return HTMLResponse(html, status_code, headers={"cache-control": "no-store"})

    def dashboard(self, request: Request) -> Response:
        status = read_status(self.config, self.journal, workers=workers(self.config))
        now = status["time"]
        running = [self._running_view(job, now) for job in status["running"]]
        # what holds work, as /healthz says it (a full disk, a share gone), else as seen on disk
        waiting = self.running.health() or status["waiting"]
        shared = request.query_params.get("shared", "")
        return self._page(
            request,
            "dashboard.html",
            status=status,
            running=running,
            waiting=waiting,
            presets=self.preset_views(),
            max_upload_mb=self.config.web.max_upload_mb,
            shared=shared if shared.isascii() and shared.isdigit() else None,
        )

    def _running_view(self, job: dict[str, Any], now: float) -> dict[str, Any]:
        """A running job with its numbers worked out: elapsed, and at most how long is left
        (the budget is an upper bound: the stopping rule usually ends a run well before)."""
        progress = job["progress"]
        view = {**job, "elapsed": None, "left": None, "preview": None}
        line = JobProgress.from_dict(progress)
        if line is not None:
            view["elapsed"] = line.elapsed_seconds + max(0.0, now - line.updated_at)
            view["left"] = line.seconds_left()
        preview = preview_path(self.config.state_dir, job["id"])
        with contextlib.suppress(OSError):  # the URL changes with the file: fetched once each
            view["preview"] = f"/previews/{job['id']}.jpg?v={preview.stat().st_mtime_ns}"
        return view

    def gallery(self, request: Request) -> Response:
        preset = request.query_params.get("preset") or None
        if preset is not None and preset not in self.config.presets:
            preset = None
        try:  # the journal clamps it: past the last page shows the last
            asked = int(request.query_params.get("page", "1"))
        except ValueError:
            asked = 1
        total, page, jobs = self.journal.finished(
            JobState.DONE, preset=preset, page=asked, page_size=PAGE_SIZE
        )
        pages = max(1, math.ceil(total / PAGE_SIZE))

        def link(number: int) -> str:
            query = {"page": number, **({"preset": preset} if preset else {})}
            return "/gallery?" + urlencode(query)

        return self._page(
            request,
            "gallery.html",
            cards=[self._card(job) for job in jobs],
            total=total,
            number=page,
            pages=pages,
            previous=link(page - 1) if page > 1 else None,
            next=link(page + 1) if page < pages else None,
            preset=preset,
            presets=list(self.config.presets),
        )

    def _card(self, job: Job) -> dict[str, Any]:
        original, painted = job.details.original, job.details.painted
        return {
            "id": job.id,
            "name": shown(Path(job.source_path).name),
            "preset": job.preset,
            "size": painted.size if painted else None,
            "seconds": painted.seconds if painted else None,
            "finished_at": job.finished_at,
            "has_original": original is not None and os.path.lexists(original),
            # a link, if it can be served (serving checks again, on the open file)
            "original_full": original is not None
            and real_file_within(Path(original), (self.config.outbox,)) is not None,
        }

    def failed(self, request: Request) -> Response:
        return self._page(request, "failed.html", photos=failed.list_failed(self.config))

    def presets(self, request: Request) -> Response:
        return self._page(
            request,
            "presets.html",
            presets=self.preset_views(),
            paintings_folder=self.config.paintings is not None,
        )

    def preset_views(self) -> list[dict[str, Any]]:
        """Each preset: its paintings (with their thumbnails) and what it changes from the
        paper's values; as the presets page, the upload panel and the API show it."""
        default = self.config.routing.default_preset
        painted = {seen.name for seen in self.config.paintings_seen if seen.state == "preset"}
        views = []
        for name, preset in self.config.presets.items():
            changed = {
                field.name: getattr(preset.settings, field.name)
                for field in dataclasses.fields(StyleSettings)
                if getattr(preset.settings, field.name) != getattr(_DEFAULTS, field.name)
            }
            if changed.get("size") == FULL_SIZE:
                changed["size"] = "full"  # as the config says it
            paintings = [
                {
                    "name": shown(style.path.name),
                    "weight": style.weight,
                    "thumbnail": f"/thumbs/preset/{quote(name)}/{index}.jpg",
                }
                for index, style in enumerate(preset.styles)
            ]
            views.append(
                {
                    "name": name,
                    "default": name == default,
                    "from_painting": name in painted,
                    "paintings": paintings,
                    "changed": changed,
                }
            )
        return views

    def view(self, request: Request) -> Response:
        """One result at full size over its photo, a slider between them, and a download."""
        job, _ = self._job_source(request, "result")
        card = self._card(job)
        before = None
        if card["original_full"]:
            before = f"/files/{job.id}/original"
        elif card["has_original"]:
            before = f"/thumbs/{job.id}/original.jpg"
        return self._page(request, "view.html", card=card, before=before)

    def login_form(self, request: Request) -> Response:
        after = local_path(request.query_params.get("next", ""))
        return self._page(request, "login.html", error=None, after=after)

    # -- actions ----------------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        """The form is read on the event loop; the token file and the template off it."""
        require_same_origin(request)
        form = await read_form(request)
        return await run_in_threadpool(self._login, request, form)

    def _login(self, request: Request, form: dict[str, str]) -> Response:
        if not self.access.can_log_in:
            raise HTTPException(403, READ_ONLY)
        session = self.access.log_in(form.get("token", "").strip())
        after = local_path(form.get("next", ""))
        if session is None:
            error = "That is not the token."
            return self._page(request, "login.html", 401, error=error, after=after)
        response = RedirectResponse(after, 303)
        response.set_cookie(
            COOKIE,
            session,
            max_age=SESSION_SECONDS,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    async def logout(self, request: Request) -> Response:
        require_same_origin(request)
        self.access.close_session(request)
        response = RedirectResponse("/", 303)
        response.delete_cookie(COOKIE, httponly=True, samesite="strict")
        return response

    async def pause(self, request: Request) -> Response:
        return await self._set_paused(request, True)

    async def resume(self, request: Request) -> Response:
        return await self._set_paused(request, False)

    async def _set_paused(self, request: Request, paused: bool) -> Response:
        self.access.require(request, await read_form(request))
        await run_in_threadpool(pause.set_paused, self.config, paused)
        return self._done(request, "/", paused=paused)

    async def retry(self, request: Request) -> Response:
        form = await read_form(request)
        self.access.require(request, form)
        try:
            moved = await run_in_threadpool(
                failed.retry, self.config, self.running.journal, form.get("name", "")
            )
        except FileNotFoundError:
            raise HTTPException(404, "no such photo in failed/") from None
        except (OSError, OutsideOutbox, ValueError) as exc:  # it stays in failed/
            raise HTTPException(409, f"could not move it back into the inbox: {exc}") from None
        retried = shown(str(moved.relative_to(self.config.inbox)))
        return self._done(request, "/failed", retried=retried)

    def _done(self, request: Request, page: str, **result: Any) -> Response:
        """A script (Bearer) gets what happened as JSON; a browser goes back to the page."""
        if self.access.by_bearer(request):
            return JSONResponse({"ok": True, **result})
        return RedirectResponse(page, 303)

    # -- for machines -------------------------------------------------------------------------

    def api_status(self, request: Request) -> Response:
        """What `stylebox status --json` prints."""
        status = read_status(self.config, self.journal, workers=workers(self.config))
        return JSONResponse(status, headers={"cache-control": "no-store"})

    def metrics(self, request: Request) -> Response:
        return Response(self.running.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    def healthz(self, request: Request) -> Response:
        """200 while watcher and worker are healthy, else 503 with why, for monitors and a
        container's HEALTHCHECK."""
        problem = self.running.health()
        if problem is None:
            return PlainTextResponse("ok\n")
        return PlainTextResponse(problem + "\n", 503)

    # -- files --------------------------------------------------------------------------------

    def static_file(self, request: Request) -> Response:
        found = self.static.get(request.path_params["name"])
        if found is None:
            raise HTTPException(404)
        content, media_type = found
        return Response(content, media_type=media_type, headers={"cache-control": "max-age=86400"})

    def preview(self, request: Request) -> Response:
        path = preview_path(self.config.state_dir, path_number(request, "job_id"))
        return self._send(path, (path.parent,), cache="no-cache")

    def job_thumbnail(self, request: Request) -> Response:
        job, source = self._job_source(request)
        config = self.config
        # results lie in the outbox; originals there, in move_to, or (kept) in the inbox
        folders = (config.outbox, config.originals_dir, config.inbox)
        if request.path_params["kind"] == "result":
            folders = (config.outbox,)
        key = f"{job.id}-{request.path_params['kind']}"
        return self._thumbnail(self.thumbnails.of(key, source, folders, config.max_input_pixels))

    def painting_thumbnail(self, request: Request) -> Response:
        preset = self.config.presets.get(request.path_params["name"])
        index = path_number(request, "index")
        if preset is None or index >= len(preset.styles):
            raise HTTPException(404)
        painting = preset.styles[index].path  # named by the config, wherever it lies
        key = f"preset-{preset.name}-{index}"
        made = self.thumbnails.of(key, painting, (painting.parent,), self.config.max_input_pixels)
        return self._thumbnail(made)

    def _thumbnail(self, path: Path | None) -> Response:
        if path is None:
            raise HTTPException(404)
        return self._send(path, (self.thumbnails.folder,), cache="max-age=86400")

    def job_file(self, request: Request) -> Response:
        """A result, or an original moved into the outbox, at full size."""
        _, source = self._job_source(request)
        return self._send(source, (self.config.outbox,), cache="max-age=3600")

    def _job_source(self, request: Request, kind: str | None = None) -> tuple[Job, Path]:
        """A done job's result or original, as the URL's id and kind name them."""
        job = self.journal.get(path_number(request, "job_id"))
        kind = kind or request.path_params["kind"]
        if job is None or job.state is not JobState.DONE:
            raise HTTPException(404)
        if kind == "result" and job.outputs:
            return job, Path(job.outputs[0])
        if kind == "original" and job.details.original:
            return job, Path(job.details.original)
        raise HTTPException(404)

    @staticmethod
    def _send(path: Path, folders: tuple[Path, ...], *, cache: str) -> Response:
        file = open_inside(path, folders)
        if file is None:
            raise HTTPException(404)
        return file_response(file, name=path.name, cache=cache)


def local_path(given: str) -> str:
    """Where a login goes next: `given` when it is a path on this site ("/view/7"), else "/"
    (never "//host" or "/\\host", which a browser reads as another site, nor a scheme)."""
    plain = given.isascii() and given.isprintable()
    if plain and given.startswith("/") and not given.startswith(("//", "/\\")):
        return given
    return "/"


def allowed_hosts(config: Config) -> list[str]:
    """The Host names answered: loopback ones, the listen address and `web.hosts`, so that a
    page elsewhere cannot read this one through a DNS name rebound to this machine; any name
    for a non-loopback listen without `web.hosts` (the server warns)."""
    web = config.web
    if not web.loopback and not web.hosts:
        return ["*"]
    return [*LOOPBACK_HOSTS, web.host, f"[{web.host}]", *web.hosts]


def build_app(running: Running, journal: Journal, access: Access) -> ASGIApp:
    """The ASGI app, the API mounted in it, whose unexpected errors are one log line each
    (OneLineErrors)."""
    site = Site(running, journal, access)
    api = Api(running, journal, access, site.preset_views)
    routes: list[BaseRoute] = [
        *site.routes(),
        Route("/share", api.share_target, methods=["POST"]),
        Mount(PREFIX, app=api.app()),
    ]
    hosts = allowed_hosts(running.config())
    middleware = [
        Middleware(SecurityHeaders),
        Middleware(TrustedHostMiddleware, allowed_hosts=hosts, www_redirect=False),
        Middleware(ReadGate, access=access),
    ]
    return OneLineErrors(Starlette(routes=routes, middleware=middleware))
