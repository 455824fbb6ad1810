"""The HTTP application: the JSON API and the page, over one :class:`SearchService`.

=====  ======================  =====================================================================
GET    ``/``                   the page (``static/index.html``, ``app.js``, ``style.css``; no CDN)
GET    ``/api/info``           ``{"images", "dim", "factory", "fingerprint", "model", "device", ...}``
POST   ``/api/search``         multipart: ``image`` (a file) or ``id`` (an indexed image: its stored
                               descriptor); ``top``, ``box``, ``qe``, ``alpha``, ``nprobe``,
                               ``rerank`` (steps: ``qe:k=2,coseg:K=20``) → ``{"query", "hits":
                               [{"rank", "id", "path", "score", "missing"}], "rerank", "ms", ...}``
GET    ``/api/images/{id}``    JPEG thumbnail (``?size=S``, long side, default 256) of an indexed image
POST   ``/api/coseg``          JSON ``{"ids": [...], "k": 3}``, or multipart ``image`` + ``ids``
                               (comma-separated) + ``k`` → ``{"images": [{"id", "overlay", "mask"}]}``
=====  ======================  =====================================================================

Every error is one line of JSON, ``{"error": "..."}``: 400 a non-image or corrupt upload, 404 an
unknown id or route, 413 a request body over the upload limit, 422 bad parameters, 500 the server's
own failure. The server keeps serving after each.
"""
from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Dict, List, Optional, Tuple, Union

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from retrieval.core.errors import GemsegError, first_line
from retrieval.search.query import Query as SearchQuery
from retrieval.serve.errors import BadParameterError, status_for
from retrieval.serve.service import THUMB_SIZES, SearchService
from retrieval.serve.uploads import decode_upload, parse_box, upload_name

PathLike = Union[str, Path]
STATIC = Path(__file__).resolve().parent / "static"
_STATIC_TYPES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
                 "style.css": "text/css; charset=utf-8"}
#: Room for the form's other fields on top of the upload itself.
FORM_OVERHEAD = 64 * 1024
_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
_PAGE_HEADERS = dict(_HEADERS, **{"Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:",
                                  "X-Frame-Options": "DENY"})


class UploadTooLarge(HTTPException):
    """Raised while the body is read, as soon as it passes the limit (FastAPI re-raises HTTP
    exceptions from body parsing, so this one becomes a 413 and not a parse error)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over the upload limit of {limit / 2 ** 20:g} MiB")


class BodyLimit:
    """ASGI middleware: a request body larger than ``max_bytes`` gets a 413 without being read
    (declared ``Content-Length``) or as soon as it passes the limit (streamed)."""

    def __init__(self, app: Any, max_bytes: int, upload_bytes: int) -> None:
        self.app, self.max_bytes, self.upload_bytes = app, max_bytes, upload_bytes

    async def __call__(self, scope: Dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _error(UploadTooLarge(self.upload_bytes))(scope, receive, send)
            return
        seen, started = 0, False

        async def limited_receive() -> Dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise UploadTooLarge(self.upload_bytes)
            return message

        async def tracked_send(message: Dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except UploadTooLarge as e:
            if started:
                raise
            await _error(e)(scope, receive, send)


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())[:300]


def _error(exc: Exception) -> JSONResponse:
    """The one-line JSON answer to ``exc``."""
    if isinstance(exc, HTTPException):
        return JSONResponse({"error": _one_line(exc.detail)}, exc.status_code, headers=dict(_HEADERS))
    if isinstance(exc, GemsegError):
        return JSONResponse({"error": _one_line(exc)}, status_for(exc), headers=dict(_HEADERS))
    return JSONResponse({"error": f"internal error: {type(exc).__name__}: {first_line(exc)}"}, 500,
                        headers=dict(_HEADERS))


def _validation_message(exc: RequestValidationError) -> str:
    errs = exc.errors()
    if not errs:
        return "invalid request"
    e = errs[0]
    where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path", "form"))
    return f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg", "invalid"))


def _read_static() -> Dict[str, bytes]:
    return {name: (STATIC / name).read_bytes() for name in _STATIC_TYPES}


def create_app(index_dir: Optional[PathLike] = None, model: Optional[PathLike] = None,
               concepts: Optional[PathLike] = None, max_upload_mb: float = 20.0, *,
               service: Optional[SearchService] = None, max_pixels: Optional[int] = None,
               forward_workers: int = 1, device: Optional[str] = None) -> FastAPI:
    """The FastAPI application serving the index folder ``index_dir`` (its model, or ``model``;
    ``concepts`` for concept-masked GeM), or an already open ``service``.

    max_upload_mb: the largest upload (the request body may hold 64 KiB more for the other
    fields); max_pixels: the largest upload in pixels (default Pillow's ``MAX_IMAGE_PIXELS``, about
    89 MP); forward_workers: forward passes at once on the CPU.
    """
    owned = service is None
    if service is None:
        if index_dir is None:
            raise BadParameterError("create_app needs an index folder or a service")
        service = SearchService.open(index_dir, model, concepts, forward_workers=forward_workers, device=device)
    svc = service
    if max_upload_mb <= 0:
        raise BadParameterError(f"max_upload_mb must be > 0, got {max_upload_mb}")
    upload_bytes = int(max_upload_mb * 2 ** 20)
    pixels = int(max_pixels or Image.MAX_IMAGE_PIXELS or 89_478_485)
    static = _read_static()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if owned:
            svc.close()

    app = FastAPI(title="gemseg search", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.add_middleware(BodyLimit, max_bytes=upload_bytes + FORM_OVERHEAD, upload_bytes=upload_bytes)
    app.state.service = svc

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _one_line(_validation_message(exc))}, 422, headers=dict(_HEADERS))

    @app.exception_handler(GemsegError)
    async def _gemseg_error(request: Request, exc: GemsegError) -> JSONResponse:
        return _error(exc)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        return _error(exc)

    # -- the page ------------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse)
    def page() -> Response:
        return Response(static["index.html"], media_type=_STATIC_TYPES["index.html"], headers=_PAGE_HEADERS)

    @app.get("/app.js")
    def script() -> Response:
        return Response(static["app.js"], media_type=_STATIC_TYPES["app.js"], headers=_HEADERS)

    @app.get("/style.css")
    def style() -> Response:
        return Response(static["style.css"], media_type=_STATIC_TYPES["style.css"], headers=_HEADERS)

    # -- the API -------------------------------------------------------------------------------
    @app.get("/api/info")
    def info() -> Dict[str, Any]:
        return dict(svc.info(), max_upload_mb=max_upload_mb, max_pixels=pixels)

    def query_of(image: Optional[UploadFile], image_id: Optional[str], box: Optional[str]) -> SearchQuery:
        """The query: an upload (decoded, its box checked against its size) or an indexed id (its
        stored descriptor; with a box, its file is read to check the box)."""
        has_id = image_id is not None and image_id.strip() != ""
        if (image is None) == (not has_id):
            raise BadParameterError("give exactly one of 'image' (an uploaded file) or 'id' (an indexed image)")
        if image is not None:
            name = upload_name(image.filename)
            img = decode_upload(image.file.read(), name, pixels)
            return SearchQuery(image=img, box=parse_box(box, img.size), label=name)
        i = svc.image_id(image_id.strip())
        if box is None or not box.strip():
            return SearchQuery(id=i)
        return SearchQuery(id=i, box=parse_box(box, svc.indexed_size(i)))

    @app.post("/api/search")
    def search(image: Optional[UploadFile] = File(None), id: Optional[str] = Form(None),  # noqa: A002
               top: int = Form(10), box: Optional[str] = Form(None), qe: int = Form(0),
               alpha: float = Form(3.0), nprobe: Optional[int] = Form(None),
               rerank: Optional[str] = Form(None)) -> Dict[str, Any]:
        return svc.search(query_of(image, id, box), top=top, qe=qe, alpha=alpha, nprobe=nprobe, rerank=rerank)

    @app.get("/api/images/{image_id:path}")
    def thumbnail(image_id: str, size: int = Query(256)) -> Response:
        i = svc.image_id(image_id)
        if not THUMB_SIZES[0] <= size <= THUMB_SIZES[1]:
            raise BadParameterError(f"size must be {THUMB_SIZES[0]} … {THUMB_SIZES[1]}, got {size}")
        return Response(svc.thumbnail(i, size), media_type="image/jpeg",
                        headers=dict(_HEADERS, **{"Cache-Control": "max-age=3600"}))

    @app.post("/api/coseg")
    async def coseg(request: Request) -> Dict[str, Any]:
        ctype = request.headers.get("content-type", "")
        upload = None
        if ctype.startswith("application/json"):
            try:
                body = await request.json()
            except ValueError:
                raise BadParameterError("the body is not valid JSON") from None
            if not isinstance(body, dict):
                raise BadParameterError('expected a JSON object {"ids": [...], "k": 3}')
            ids, k = body.get("ids", []), body.get("k", 3)
        elif ctype.startswith("multipart/form-data"):
            form = await request.form()
            ids = [s for s in str(form.get("ids") or "").split(",") if s.strip()]
            k, upload = form.get("k", "3"), form.get("image")
            try:
                k = int(str(k))
            except ValueError:
                raise BadParameterError(f"k must be an integer, got '{str(k)[:20]}'") from None
        else:
            raise BadParameterError("send JSON {\"ids\": [...], \"k\": 3} or a multipart form (image, ids, k)")
        if not isinstance(ids, list) or isinstance(k, bool) or not isinstance(k, int):
            raise BadParameterError('expected "ids": a list of image ids and "k": an integer')
        items: List[Tuple[Optional[int], str, Image.Image]] = []
        if upload is not None and not isinstance(upload, str):
            name = upload_name(upload.filename)
            data = await upload.read()
            items.append((None, name, await run_in_threadpool(decode_upload, data, name, pixels)))
        for x in ids:
            i = svc.image_id(str(x).strip())
            items.append((i, svc.index.paths[i], await run_in_threadpool(svc.indexed_image, i)))
        return await run_in_threadpool(svc.cosegment, items, k)

    return app

