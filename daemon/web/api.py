"""The HTTP API under /api/v1, for scripts, phones and home automation: send a photo, follow its
job, fetch the result; list, add and remove presets. FastAPI, mounted in the page's Starlette
app, writes the OpenAPI 3 document (/api/v1/openapi.json) from these routes and their pydantic
models; /api/v1/docs shows it with Swagger UI's files shipped in the package (no CDN).

Who may do what is the page's rule (web/access.py): every write needs the token, as a Bearer
header, or the page's session with its CSRF header; reads are open unless a read token is
configured, and then need either token or a session, as the page's do. The page's own
checks (the Host header, the security headers, one log line per unexpected error) wrap this app
too, since it is mounted inside that one.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import Response

from daemon import __version__
from daemon.config import Config
from daemon.config.paintings import PaintingRefused, add_painting, remove_painting
from daemon.outbox import safe_name
from daemon.paths import shown
from daemon.service.journal import Job, JobState, Journal
from daemon.service.loop import Running
from daemon.web import uploads
from daemon.web.access import READ_ONLY, Access, require_share_launch
from daemon.web.api_docs import docs_routes
from daemon.web.files import file_response, open_inside

PREFIX = "/api/v1"
MAX_ID = 2**63 - 1  # SQLite's largest integer
MAX_PAGE_SIZE = 100
JobId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="the job's id")]
StateName = Literal["queued", "running", "done", "failed", "quarantined"]
FINAL_STATES = (JobState.DONE, JobState.FAILED, JobState.QUARANTINED)


class Problem(BaseModel):
    """Why a request was refused, in a sentence."""

    detail: str


class Progress(BaseModel):
    """How far a running job is (the worker reports every 2 s)."""

    evaluation: int
    budget: int = Field(description="evaluations at most; the stopping rule often ends sooner")
    objective: float | None
    elapsed_seconds: float
    worker: str | None = None


class Painted(BaseModel):
    """A done job's result."""

    width: int
    height: int
    seconds: float = Field(description="time spent painting")
    formats: list[str] = Field(description="what `GET .../result?format=` offers")


class JobLinks(BaseModel):
    """Where to go next."""

    self: str
    result: str | None = Field(None, description="the result image, once done")
    download: str | None = Field(None, description="the result as a download, once done")
    page: str | None = Field(None, description="the before/after view on the web page")


class JobView(BaseModel):
    """One job: a photo and the preset it is painted with."""

    id: int
    name: str = Field(description="the photo's file name in the inbox")
    preset: str
    state: StateName
    attempts: int
    enqueued_at: float = Field(description="Unix time")
    started_at: float | None
    finished_at: float | None
    error: str | None
    progress: Progress | None
    result: Painted | None
    links: JobLinks


class Accepted(JobView):
    """The job a photo became; `created` false: the same bytes were sent before for this
    preset, and this is that job (nothing was written)."""

    created: bool


class JobPage(BaseModel):
    """A page of jobs, newest first."""

    total: int
    page: int
    pages: int
    page_size: int
    jobs: list[JobView]


class Painting(BaseModel):
    """One style image of a preset."""

    name: str
    weight: float
    thumbnail: str


class PresetView(BaseModel):
    """A preset: its paintings and the parameters it sets away from the paper's."""

    name: str
    default: bool = Field(description="photos routed to no other preset get this one")
    from_painting: bool = Field(
        description="made from a painting in the paintings folder (DELETE removes it)"
    )
    paintings: list[Painting]
    changed: dict[str, Any]


_WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "no token (send Authorization: Bearer)"},
    403: {"model": Problem, "description": "read-only: no web.token_file, or the read token"},
}
_PHOTO_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "preset": {
                            "type": "string",
                            "description": "the preset to paint it with; by default the "
                            "routing's (its rules, else routing.default_preset)",
                        },
                    },
                }
            }
        },
    }
}


class PaintingAdded(BaseModel):
    """A painting written into the paintings folder: the daemon makes it a preset at its next
    look (after watch.settle_seconds), then GET /presets lists it."""

    name: str = Field(description="the preset's name, made from the name given")
    file: str = Field(description="the painting's file name in the paintings folder")


class PaintingsRemoved(BaseModel):
    """The files removed from the paintings folder (the painting and its sidecar)."""

    name: str
    removed: list[str]


# PaintingRefused.what -> the status it answers
_REFUSED_STATUS = {
    "no_folder": 409,
    "name": 422,
    "taken": 409,
    "image": 422,
    "overrides": 422,
    "missing": 404,
}
_PAINTING_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["painting"],
                    "properties": {
                        "painting": {"type": "string", "format": "binary"},
                        "name": {
                            "type": "string",
                            "description": "the preset's name; by default the file's stem",
                        },
                        "parameters": {
                            "type": "string",
                            "description": "a JSON object of what the preset changes from the "
                            'paper\'s values, as in the config: {"size": 768, "steps": 300}',
                        },
                    },
                }
            }
        },
    }
}


class Api:
    """The API's routes over one running daemon (see Site for `journal` and `running`)."""

    def __init__(
        self, running: Running, journal: Journal, access: Access, site_presets: Any
    ) -> None:
        self.running = running
        self.journal = journal
        self.access = access
        self.site_presets = site_presets  # the presets page's view of one preset

    @property
    def config(self) -> Config:
        """The config in force."""
        return self.running.config()

    def reading(
        self,
        request: Request,
        _: Annotated[HTTPAuthorizationCredentials | None, Depends(HTTPBearer(auto_error=False))],
    ) -> None:
        """A read: open, unless a read token is configured."""
        self.access.require_read(request)

    def writing(
        self,
        request: Request,
        _: Annotated[HTTPAuthorizationCredentials | None, Depends(HTTPBearer(auto_error=False))],
    ) -> None:
        """A write: the token, or the page's session with its CSRF header."""
        self.access.require_api_write(request)

    def router(self) -> APIRouter:
        """Every route, with what the OpenAPI document says of each."""
        router = APIRouter()
        read, write = [Depends(self.reading)], [Depends(self.writing)]
        router.add_api_route(
            "/photos",
            self.send_photo,
            methods=["POST"],
            status_code=202,
            response_model=Accepted,
            dependencies=write,
            openapi_extra=_PHOTO_FORM,
            responses={
                **_WRITE_ERRORS,
                413: {"model": Problem, "description": "larger than web.max_upload_mb"},
                415: {"model": Problem, "description": "not an image this install reads"},
                422: {"model": Problem, "description": "a broken image, or an unknown preset"},
            },
            summary="Send a photo to be painted",
        )
        router.add_api_route(
            "/jobs",
            self.list_jobs,
            response_model=JobPage,
            dependencies=read,
            summary="Jobs in one state, newest first",
        )
        router.add_api_route(
            "/jobs/{job_id}",
            self.get_job,
            response_model=JobView,
            dependencies=read,
            responses={404: {"model": Problem}},
            summary="A job: its state, progress and result links",
        )
        router.add_api_route(
            "/jobs/{job_id}/result",
            self.get_result,
            dependencies=read,
            response_class=Response,
            responses={
                200: {"content": {"image/*": {}}, "description": "the result"},
                404: {"model": Problem, "description": "no such job, or not done"},
            },
            summary="A done job's result",
        )
        router.add_api_route(
            "/presets",
            self.list_presets,
            response_model=list[PresetView],
            dependencies=read,
            summary="The presets and their paintings",
        )
        router.add_api_route(
            "/presets",
            self.add_preset,
            methods=["POST"],
            status_code=202,
            response_model=PaintingAdded,
            dependencies=write,
            openapi_extra=_PAINTING_FORM,
            responses={
                **_WRITE_ERRORS,
                409: {"model": Problem, "description": "no paintings folder, or a config name"},
                413: {"model": Problem, "description": "larger than web.max_upload_mb"},
                422: {"model": Problem, "description": "not a whole image, or bad parameters"},
            },
            summary="Add a painting: a preset named after it",
        )
        router.add_api_route(
            "/presets/{name}",
            self.remove_preset,
            methods=["DELETE"],
            response_model=PaintingsRemoved,
            dependencies=write,
            responses={
                **_WRITE_ERRORS,
                404: {"model": Problem, "description": "no painting gives this preset"},
                409: {"model": Problem, "description": "a preset of the config file"},
            },
            summary="Remove a preset made from a painting",
        )
        return router

    # -- photos and jobs ----------------------------------------------------------------------

    async def send_photo(self, request: Request) -> JSONResponse:
        """Multipart `file` (and `preset`): written into the inbox (its preset's folder) once
        checked, queued at once; the same bytes sent again are the same job."""
        config = self.config
        received = await uploads.receive(
            dict(request.headers),
            request.stream(),
            config.state_dir,
            config.web.max_upload_bytes,
        )
        try:
            return await run_in_threadpool(self._take_photo, config, received)
        finally:
            received.discard()

    def _take_photo(self, config: Config, received: uploads.Received) -> JSONResponse:
        photo = received.one_file("file")
        if photo is None:
            raise HTTPException(422, "no file: send it in the form field `file`")
        preset = received.fields.get("preset", "").strip() or None
        if preset is not None and preset not in config.presets:
            known = ", ".join(config.presets)
            raise HTTPException(422, f"no preset named {preset!r} (there are: {known})")
        media_type = uploads.check_image(photo, config.max_input_pixels)
        name = uploads.upload_name(photo, media_type)
        delivered = uploads.deliver(config, self.running.journal, photo, name, preset)
        view = self._view(delivered.job).model_dump()
        body = Accepted(**view, created=delivered.created)
        headers = {"location": f"{PREFIX}/jobs/{delivered.job.id}"}
        return JSONResponse(body.model_dump(mode="json"), 202, headers=headers)

    def list_jobs(
        self,
        state: StateName = "done",
        preset: str | None = None,
        page: Annotated[int, Query(ge=1, le=MAX_ID)] = 1,
        page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 24,
    ) -> JobPage:
        """Done, failed or quarantined jobs the latest to finish first; queued ones in the
        order they will run; running ones."""
        wanted = JobState(state)
        if wanted in FINAL_STATES:
            total, page, jobs = self.journal.finished(
                wanted, preset=preset, page=page, page_size=page_size
            )
        else:
            if wanted is JobState.RUNNING:
                every = self.journal.running()
            else:  # the queue, a page at a time (its length is the journal's count)
                every = self.journal.pending(limit=min(page, 10_000) * page_size)
            every = [job for job in every if preset is None or job.preset == preset]
            total = self.journal.counts()[wanted] if preset is None else len(every)
            page = min(page, max(1, math.ceil(len(every) / page_size)))
            jobs = every[(page - 1) * page_size : page * page_size]
        return JobPage(
            total=total,
            page=page,
            pages=max(1, math.ceil(total / page_size)),
            page_size=page_size,
            jobs=[self._view(job) for job in jobs],
        )

    def get_job(self, job_id: JobId) -> JSONResponse:
        """One job, as it stands now."""
        job = self.journal.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        body = self._view(job).model_dump(mode="json")
        return JSONResponse(body, headers={"cache-control": "no-store"})

    def get_result(
        self,
        job_id: JobId,
        format: Annotated[
            str | None, Query(max_length=16, description="one of the job's result.formats")
        ] = None,
        download: bool = False,
    ) -> Response:
        """The result image (its sidecar with `format=json`); `download=true` to save it."""
        job = self.journal.get(job_id)
        if job is None or job.state is not JobState.DONE or not job.outputs:
            raise HTTPException(404, f"job {job_id} has no result (yet)")
        outputs = _by_format(job)
        chosen = format.lower().lstrip(".") if format else next(iter(outputs))
        if chosen not in outputs:
            raise HTTPException(404, f"no {chosen} result; there are: {', '.join(outputs)}")
        path = outputs[chosen]
        file = open_inside(path, (self.config.outbox,))
        if file is None:
            raise HTTPException(404, f"job {job_id}'s result is no longer in the outbox")
        return file_response(file, name=path.name, cache="max-age=3600", download=download)

    def _view(self, job: Job) -> JobView:
        progress = job.details.progress
        painted = job.details.painted
        result = None
        links = JobLinks(self=f"{PREFIX}/jobs/{job.id}")
        if job.state is JobState.DONE and job.outputs:
            if painted is not None:
                width, height = painted.size
                result = Painted(
                    width=width, height=height, seconds=painted.seconds, formats=[*_by_format(job)]
                )
            links.result = f"{PREFIX}/jobs/{job.id}/result"
            links.download = f"{links.result}?download=true"
            links.page = f"/view/{job.id}"
        return JobView(
            id=job.id,
            name=shown(Path(job.source_path).name),
            preset=job.preset,
            state=str(job.state),  # type: ignore[arg-type]  # StateName's values
            attempts=job.attempts,
            enqueued_at=job.enqueued_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            error=job.error,
            progress=Progress(**progress.as_dict()) if progress is not None else None,
            result=result,
            links=links,
        )

    async def share_target(self, request: Request) -> Response:
        """/share, where the manifest's share_target posts: the photos a phone shares, each
        taken as POST /photos takes one (the routing's preset), then the dashboard. The
        page's session, and the browser's word that no other site sent it, stand in for the
        CSRF value such a form cannot carry."""
        if self.access.read_only:
            raise HTTPException(403, READ_ONLY)
        if not self.access.logged_in(request):
            return RedirectResponse("/login", 303)  # then share again
        require_share_launch(request)
        config = self.config
        received = await uploads.receive(
            dict(request.headers), request.stream(), config.state_dir, config.web.max_upload_bytes
        )
        try:
            ids = await run_in_threadpool(self._take_shared, config, received)
        finally:
            received.discard()
        return RedirectResponse(f"/?shared={ids[-1]}" if ids else "/", 303)

    def _take_shared(self, config: Config, received: uploads.Received) -> list[int]:
        ids = []
        for photo in received.files.get("file", []):
            media_type = uploads.check_image(photo, config.max_input_pixels)
            name = uploads.upload_name(photo, media_type)
            ids.append(uploads.deliver(config, self.running.journal, photo, name, None).job.id)
        return ids

    # -- presets --------------------------------------------------------------------------------

    def list_presets(self) -> list[PresetView]:
        """Each preset with its paintings' thumbnails."""
        return [PresetView(**view) for view in self.site_presets()]

    async def add_preset(self, request: Request) -> JSONResponse:
        """Multipart `painting` (and `name`, `parameters`): written into the paintings folder
        once checked; the daemon makes it a preset at its next look."""
        config = self.config
        received = await uploads.receive(
            dict(request.headers), request.stream(), config.state_dir, config.web.max_upload_bytes
        )
        try:
            return await run_in_threadpool(self._add_painting, config, received)
        finally:
            received.discard()

    def _add_painting(self, config: Config, received: uploads.Received) -> JSONResponse:
        painting = received.one_file("painting")
        if painting is None:
            raise HTTPException(422, "no painting: send it in the form field `painting`")
        name = received.fields.get("name", "").strip() or Path(safe_name(painting.filename)).stem
        try:
            overrides = json.loads(received.fields.get("parameters", "").strip() or "{}")
        except json.JSONDecodeError as exc:
            raise HTTPException(422, f"parameters: not JSON ({exc})") from None
        if not isinstance(overrides, dict):
            raise HTTPException(422, 'parameters: a JSON object, such as {"steps": 300}')
        try:
            path = add_painting(config, name, painting.path.read_bytes(), overrides)
        except PaintingRefused as exc:
            raise HTTPException(_REFUSED_STATUS[exc.what], "; ".join(exc.problems)) from None
        except OSError as exc:
            raise HTTPException(503, f"the paintings folder cannot take it: {exc}") from None
        body = PaintingAdded(name=path.stem, file=path.name).model_dump()
        return JSONResponse(body, 202, headers={"location": f"{PREFIX}/presets"})

    def remove_preset(
        self, name: Annotated[str, PathParam(max_length=64, description="the preset")]
    ) -> PaintingsRemoved:
        """Remove the painting (and its sidecar) that gives the preset; the daemon drops the
        preset at its next look, and photos in its inbox folder wait."""
        try:
            removed = remove_painting(self.config, name)
        except PaintingRefused as exc:
            raise HTTPException(_REFUSED_STATUS[exc.what], "; ".join(exc.problems)) from None
        return PaintingsRemoved(name=name, removed=[path.name for path in removed])

    def app(self) -> FastAPI:
        """The API as an ASGI app, to mount at PREFIX."""
        app = FastAPI(
            title="stylebox",
            version=__version__,
            summary="Neural style transfer (Gatys et al.) of photos sent to a drop-folder daemon",
            description=(
                "Send a photo, follow its job, fetch the painted result. Writes need "
                "`Authorization: Bearer <token>` (web.token_file); reads are open unless "
                "web.read_token_file is set. Uploads are bounded by web.max_upload_mb."
            ),
            openapi_url="/openapi.json",
            docs_url=None,
            redoc_url=None,
            routes=docs_routes(),
        )
        app.include_router(self.router())
        return app


def _by_format(job: Job) -> dict[str, Path]:
    """The job's results by format (their extension, lower case), the image first."""
    found: dict[str, Path] = {}
    for output in job.outputs:
        path = Path(output)
        found.setdefault(path.suffix.lower().lstrip(".") or "file", path)
    return found
