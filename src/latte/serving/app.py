"""HTTP routes of `latte serve`: the OpenAI-style video job API, its event streams, and the web page.

Errors are `{"error": {"code", "message", "param"}}` with one-line messages that name the field.
"""

import asyncio
import contextlib
import hmac
import json
from importlib import resources

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse

from latte.serving.jobs import TERMINAL, VARIANTS, IdempotencyMismatch, NotCancellable, QueueFull, Service
from latte.serving.params import InvalidParam, VideoRequest

MAX_BODY_BYTES = 64 * 1024  # a job request is a few hundred bytes
MAX_IDEMPOTENCY_KEY = 255
MAX_LIST_LIMIT = 100
KEEPALIVE_S = 15.0  # an SSE comment this often keeps proxies from closing a quiet stream


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, param: str | None = None, headers=None):
        super().__init__(message)
        self.status, self.code, self.message, self.param, self.headers = status, code, message, param, headers


def _error(status: int, code: str, message: str, param: str | None = None, headers=None) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "param": param}}
    return JSONResponse(body, status_code=status, headers=headers)


def create_app(service: Service, api_key: str | None = None, owns_service: bool = False) -> FastAPI:
    """The ASGI app over a `Service` (started or not: without a worker, jobs stay queued). With
    `owns_service`, the server's shutdown (Ctrl-C, SIGTERM) stops the service: the job it was running is
    queued again for the next start."""

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        if owns_service:
            await asyncio.to_thread(service.stop)

    app = FastAPI(title="latte serve", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)

    def require_key(request: Request) -> None:
        if api_key is None:
            return
        # The header for API clients; RFC 6750's access_token query parameter for what a browser cannot give
        # a header to (the page, <video src>, download links, EventSource).
        header = request.headers.get("authorization", "")
        given = header[7:] if header[:7].lower() == "bearer " else request.query_params.get("access_token", "")
        if not hmac.compare_digest(given.encode(), api_key.encode()):
            raise ApiError(401, "unauthorized", "missing or wrong API key: send 'Authorization: Bearer KEY' "
                           "(or ?access_token=KEY)", headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError):
        return _error(err.status, err.code, err.message, err.param, err.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, err: RequestValidationError):
        # An unknown field first: it is usually a misspelt known one, which then shows as missing.
        first = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]
        loc = [str(part) for part in first["loc"] if part not in ("body", "query", "path", "header")]
        field = ".".join(loc) or "body"
        got = "" if first["type"] == "missing" else f", got {json.dumps(first.get('input'), default=str):.80}"
        return _error(422, "invalid_request", f"{field}: {first['msg']}{got}", field)

    @app.get("/healthz")
    def healthz():
        if not service.worker_alive():
            return _error(503, "worker_down", "the worker is not running")
        return {"status": "ok"}

    api = APIRouter(dependencies=[Depends(require_key)])

    @api.get("/", response_class=HTMLResponse)
    def page():
        return HTMLResponse(PAGE)

    @api.get("/v1/models")
    def models():
        m = service.model
        return {"object": "list", "data": [{
            "id": m.name, "object": "model", "owned_by": "latte", "defaults": m.defaults,
            "scheduler": m.scheduler, "schedulers": list(m.schedulers), "size_multiple": m.size_multiple,
            "limits": {"max_frames": service.limits.max_frames, "max_steps": service.limits.max_steps,
                       "max_pixels": service.limits.max_pixels},
        }]}

    @api.post("/v1/videos", status_code=202)
    def create(body: VideoRequest, idempotency_key: str | None = Header(None)):
        if idempotency_key is not None and not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
            raise ApiError(422, "invalid_request", f"Idempotency-Key: 1 to {MAX_IDEMPOTENCY_KEY} characters, got "
                           f"{len(idempotency_key)}", "Idempotency-Key")
        try:
            job, created = service.submit(body, idempotency_key)
        except InvalidParam as err:
            raise ApiError(422, "invalid_request", str(err), err.field) from None
        except IdempotencyMismatch as err:
            raise ApiError(422, "idempotency_key_reused", f"Idempotency-Key: {err}", "Idempotency-Key") from None
        except QueueFull as err:
            raise ApiError(429, "queue_full", str(err), headers={"Retry-After": str(err.retry_after_s)}) from None
        headers = {} if created else {"Idempotent-Replayed": "true"}
        return JSONResponse(job, status_code=202, headers=headers)

    @api.get("/v1/videos")
    def list_jobs(limit: int = Query(20, ge=1, le=MAX_LIST_LIMIT), after: str | None = None):
        try:
            jobs, has_more = service.list(limit, after)
        except KeyError:
            raise ApiError(422, "invalid_request", f"after: no job {after!r}", "after") from None
        return {"object": "list", "data": jobs, "has_more": has_more}

    def found(job_id: str) -> dict:
        job = service.get(job_id)
        if job is None:
            raise ApiError(404, "not_found", f"no job {job_id!r}")
        return job

    @api.get("/v1/videos/{job_id}")
    def get_job(job_id: str):
        return found(job_id)

    @api.get("/v1/videos/{job_id}/content")
    def content(job_id: str, variant: str = "video"):
        job = found(job_id)
        if variant not in VARIANTS:
            raise ApiError(422, "invalid_request", f"variant: one of {', '.join(VARIANTS)}, got {variant!r}",
                           "variant")
        if job["status"] != "completed":
            raise ApiError(409, "not_completed", f"job {job_id} is {job['status']}; its video exists only once "
                           "it is completed")
        path = service.video_path(job_id, variant)
        if not path.is_file():
            raise ApiError(410, "gone", f"the video of job {job_id} was removed from the data folder")
        media = "video/mp4" if variant == "video" else "image/gif"
        return FileResponse(path, media_type=media, filename=path.name, content_disposition_type="inline")

    @api.get("/v1/videos/{job_id}/events")
    async def events(job_id: str):
        found(job_id)
        return StreamingResponse(_event_stream(service, job_id), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @api.post("/v1/videos/{job_id}/cancel")
    def cancel(job_id: str):
        try:
            job = service.cancel(job_id)
        except NotCancellable as err:
            raise ApiError(409, "not_cancellable", str(err)) from None
        if job is None:
            raise ApiError(404, "not_found", f"no job {job_id!r}")
        return job

    @api.delete("/v1/videos/{job_id}")
    def delete(job_id: str):
        if not service.delete(job_id):
            raise ApiError(404, "not_found", f"no job {job_id!r}")
        return {"id": job_id, "object": "video.deleted", "deleted": True}

    app.include_router(api)
    return app


async def _event_stream(service: Service, job_id: str):
    """`progress` events while the job is queued or running (each carries the job), then one of
    `completed` / `failed` / `cancelled` and the end of the stream; `deleted` if it is deleted meanwhile."""
    listener = service.listen()
    try:
        last = None
        while not service.stopping:
            listener.event.clear()  # before reading, so a change after the read still wakes us
            job = service.get(job_id)
            if job is None:
                yield f"event: deleted\ndata: {json.dumps({'id': job_id})}\n\n"
                return
            if job != last:
                kind = job["status"] if job["status"] in TERMINAL else "progress"
                yield f"event: {kind}\ndata: {json.dumps(job)}\n\n"
                if kind != "progress":
                    return
                last = job
            try:
                await asyncio.wait_for(listener.event.wait(), KEEPALIVE_S)
            except asyncio.TimeoutError:
                yield ": keep-alive\n\n"
    finally:
        service.unlisten(listener)


class BodyLimit:
    """ASGI middleware: requests with bodies over `max_bytes` get 413 before any route reads them."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await self._refuse(scope, receive, send)
        # Read the body here (it is small or refused), then replay it to the app.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, _replay([message]), send)
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                return await self._refuse(scope, receive, send)
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], then=receive), send)

    async def _refuse(self, scope, receive, send):
        response = _error(413, "body_too_large", f"request body over {self.max_bytes} bytes")
        await response(scope, receive, send)


def _replay(messages: list, then=None):
    async def receive():
        if messages:
            return messages.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive


def _page() -> str:
    """The web page: index.html with its stylesheet and script inlined, so one authorised request loads it."""
    folder = resources.files("latte.serving") / "page"
    html = (folder / "index.html").read_text()
    style, script = (folder / "style.css").read_text(), (folder / "app.js").read_text()
    return html.replace("/*STYLE*/", style).replace("/*SCRIPT*/", script)


PAGE = _page()
