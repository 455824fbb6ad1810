"""The HTTP application: the JSON API and the page, over one :class:`SearchService`.

=====  ======================  =====================================================================
GET    ``/``                   the page (``static/index.html``, ``app.js``, ``style.css``; no CDN)
GET    ``/api/info``           ``{"images", "live_images", "dim", "factory", "fingerprint", "model",
                               "device", "commit", "max_upload_mb", "token_required", "rerankers", ...}``
POST   ``/api/search``         multipart: ``image`` (a file) or ``id`` (an indexed image: its stored
                               descriptor); or JSON ``{"vector": [...]}`` or ``{"id": i}``; with
                               ``top``, ``box``, ``qe``, ``alpha``, ``nprobe``, ``rerank`` (steps:
                               ``qe:k=2,coseg:K=20``), ``return_vectors``, ``preview`` → ``{"query",
                               "hits": [{"rank", "id", "path", "score", "missing"}], "rerank",
                               "commit", "stages", "ms", ...}``
GET    ``/api/images/{id}``    JPEG thumbnail (``?size=S``, long side, default 256) of an indexed image
POST   ``/api/coseg``          JSON ``{"ids": [...], "k": 3}``, or multipart ``image`` + ``ids``
                               (comma-separated) + ``k`` → ``{"images": [{"id", "overlay", "mask",
                               "box"}], "colours", ...}`` (boxes in the images' own pixels)
GET    ``/healthz``            ``{"status": "ok"}`` while the process serves (never needs the token)
GET    ``/readyz``             200 ``{"ready": true, "commit"}`` once the model and the index are loaded
GET    ``/metrics``            Prometheus text format (:mod:`~retrieval.serve.metrics`)
=====  ======================  =====================================================================

Every error is one line of JSON, ``{"error": "..."}``: 400 a non-image or corrupt upload, 401 a
missing or wrong token (:mod:`~retrieval.serve.access`), 404 an unknown or removed id or an
unknown route, 413 a request body over the upload limit, 422 bad parameters, 500 the server's own
failure. The server keeps serving after each.

A body that is refused (413, 401) is read and discarded up to :data:`DRAIN_BYTES` /
:data:`DRAIN_SECONDS` before the answer, so clients that send the whole body before reading
(Python's urllib and requests, browsers) read the answer instead of a reset connection; a client
that sent ``Expect: 100-continue`` (curl) is answered at once, its body never sent.
"""
from __future__ import annotations

import asyncio
import json
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, List, Optional, Tuple, Union

import orjson
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from retrieval.core.errors import GemsegError, ImageError, first_line
from retrieval.search.query import Query as SearchQuery
from retrieval.search.rerank.registry import reranker_names
from retrieval.serve.access import OPEN_PATHS, resolve_token, token_matches
from retrieval.serve.errors import BadParameterError, status_for
from retrieval.serve.metrics import ServerMetrics, refusal_reason, route_of
from retrieval.serve.service import THUMB_SIZES, IndexState, SearchService, jpeg_data_url
from retrieval.serve.uploads import decode_upload, parse_box, upload_name

PathLike = Union[str, Path]
STATIC = Path(__file__).resolve().parent / "static"
_STATIC_TYPES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
                 "style.css": "text/css; charset=utf-8"}
#: Room for the form's other fields on top of the upload itself.
FORM_OVERHEAD = 64 * 1024
#: A refused body is read and discarded up to this many bytes and seconds before the answer.
DRAIN_BYTES = 256 * 2 ** 20
DRAIN_SECONDS = 15.0
_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
_PAGE_HEADERS = dict(_HEADERS, **{"Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:",
                                  "X-Frame-Options": "DENY"})
#: Route labels of the metrics (an exact path, or a prefix ending with ``/``).
ROUTES = (("/", "/"), ("/app.js", "/app.js"), ("/style.css", "/style.css"), ("/api/info", "/api/info"),
          ("/api/search", "/api/search"), ("/api/images/", "/api/images/{id}"), ("/api/coseg", "/api/coseg"),
          ("/healthz", "/healthz"), ("/readyz", "/readyz"), ("/metrics", "/metrics"))
#: Fields of a search request, and which are booleans.
SEARCH_FIELDS = ("image", "id", "vector", "top", "box", "qe", "alpha", "nprobe", "rerank", "return_vectors",
                 "preview")

Receive = Callable[[], Awaitable[Dict[str, Any]]]


class UploadTooLarge(HTTPException):
    """Raised while the body is read, as soon as it passes the limit (FastAPI re-raises HTTP
    exceptions from body parsing, so this one becomes a 413 and not a parse error)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over the upload limit of {limit / 2 ** 20:g} MiB")


async def drain(receive: Receive, max_bytes: int = DRAIN_BYTES, seconds: float = DRAIN_SECONDS) -> bool:
    """Read and discard the rest of a request body, at most ``max_bytes`` for at most ``seconds``.
    True when the body was read to its end (the connection can then be kept)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    read = 0
    while read <= max_bytes:
        left = deadline - loop.time()
        if left <= 0:
            return False
        try:
            message = await asyncio.wait_for(receive(), left)
        except asyncio.TimeoutError:
            return False
        if message["type"] != "http.request":
            return False
        read += len(message.get("body", b""))
        if not message.get("more_body", False):
            return True
    return False


def _headers(scope: Dict[str, Any]) -> Dict[bytes, bytes]:
    return {k.lower(): v for k, v in scope.get("headers") or []}


async def refuse(scope: Dict[str, Any], receive: Receive, send: Any, exc: Exception, *, body_started: bool = False,
                 body_ended: bool = False, extra: Optional[Dict[str, str]] = None) -> None:
    """Answer ``exc`` (one line of JSON) to a request whose body is not wanted: the body is read
    and discarded first (:func:`drain`), unless the client waits for ``100-continue`` before
    sending it or its last part was already read (``body_ended``: nothing is left to wait for);
    the connection is closed when the body could not be read to its end."""
    headers = _headers(scope)
    expects = headers.get(b"expect", b"").lower() == b"100-continue" and not body_started
    has_body = body_started or headers.get(b"content-length", b"0") not in (b"0", b"") or \
        b"chunked" in headers.get(b"transfer-encoding", b"").lower()
    complete = True
    if has_body and not expects and not body_ended:
        complete = await drain(receive)
    response = _error(exc)
    if extra:
        response.headers.update(extra)
    if expects or not complete:
        response.headers["Connection"] = "close"
    await response(scope, receive, send)


class BodyLimit:
    """ASGI middleware: a request body larger than ``max_bytes`` gets a 413, from its declared
    ``Content-Length`` before the app reads it, or as soon as a streamed body passes the limit;
    the body is discarded first (:func:`refuse`) so that the client reads the answer."""

    def __init__(self, app: Any, max_bytes: int, upload_bytes: int,
                 on_refuse: Optional[Callable[[], None]] = None) -> None:
        self.app, self.max_bytes, self.upload_bytes, self.on_refuse = app, max_bytes, upload_bytes, on_refuse

    async def __call__(self, scope: Dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _headers(scope).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            if self.on_refuse:
                self.on_refuse()
            await refuse(scope, receive, send, UploadTooLarge(self.upload_bytes))
            return
        seen, started, ended = 0, False, False

        async def limited_receive() -> Dict[str, Any]:
            nonlocal seen, ended
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                ended = not message.get("more_body", False)
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
            if self.on_refuse:
                self.on_refuse()
            await refuse(scope, receive, send, e, body_started=True, body_ended=ended)


class RequireToken:
    """ASGI middleware: with a token, every path but :data:`~retrieval.serve.access.OPEN_PATHS`
    needs ``Authorization: Bearer <token>``; otherwise a 401 (its body discarded first)."""

    def __init__(self, app: Any, token: Optional[str]) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Dict[str, Any], receive: Any, send: Any) -> None:
        if (self.token is None or scope["type"] != "http" or scope.get("path", "") in OPEN_PATHS
                or token_matches(_headers(scope).get(b"authorization"), self.token)):
            await self.app(scope, receive, send)
            return
        await refuse(scope, receive, send, HTTPException(401, "a valid token is needed: send the header "
                                                              "'Authorization: Bearer <token>'"),
                     extra={"WWW-Authenticate": 'Bearer realm="gemseg"'})


class Observe:
    """ASGI middleware (outermost): every request counted by route and status, and timed."""

    def __init__(self, app: Any, metrics: ServerMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [500]

        async def seen_send(message: Dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, seen_send)
        finally:
            self.metrics.request(route_of(scope.get("path", ""), ROUTES), status[0], time.perf_counter() - t0)


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


def _int_field(fields: Dict[str, Any], name: str, default: Optional[int]) -> Optional[int]:
    v = fields.get(name)
    if v is None or (isinstance(v, str) and not v.strip()):
        return default
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lstrip("-").isdigit() and len(v.strip()) < 12:
        return int(v.strip())
    raise BadParameterError(f"{name} must be an integer, got {str(v)[:30]!r}")


def _float_field(fields: Dict[str, Any], name: str, default: float) -> float:
    v = fields.get(name)
    if v is None or (isinstance(v, str) and not v.strip()):
        return default
    if isinstance(v, bool):
        raise BadParameterError(f"{name} must be a number, got {v!r}")
    try:
        return float(v)
    except (TypeError, ValueError):
        raise BadParameterError(f"{name} must be a number, got {str(v)[:30]!r}") from None


def _bool_field(fields: Dict[str, Any], name: str) -> bool:
    v = fields.get(name)
    if v is None or isinstance(v, bool):
        return bool(v)
    if isinstance(v, str) and v.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off", ""):
        return v.strip().lower() in ("1", "true", "yes", "on")
    raise BadParameterError(f"{name} must be true or false, got {str(v)[:30]!r}")


def _str_field(fields: Dict[str, Any], name: str) -> Optional[str]:
    v = fields.get(name)
    if v is None:
        return None
    if isinstance(v, (list, tuple)) and name == "box":
        return ",".join(str(x) for x in v)
    if not isinstance(v, (str, int)) or isinstance(v, bool):
        raise BadParameterError(f"{name} must be a string, got {type(v).__name__}")
    return str(v)


def plain_lookup(fields: Dict[str, Any]) -> bool:
    """Whether a search request reads no file and runs no step: by id or vector, without a box,
    re-ranking, α-QE or an ``nprobe`` of its own (:mod:`retrieval.serve.service`, "Quick
    searches on the event loop")."""
    if fields.get("image") is not None:
        return False
    return all(fields.get(k) in (None, "", 0, "0") for k in ("box", "rerank", "qe", "nprobe"))


async def search_fields(request: Request) -> Dict[str, Any]:
    """The fields of a search request: a JSON object, or a form (multipart or url-encoded); a
    request without a body has none. Unknown fields are refused (a typo is not silently ignored).

    Raises:
        BadParameterError: another content type, invalid JSON, not an object, an unknown field.
    """
    ctype = request.headers.get("content-type", "").lower()
    if ctype.startswith("application/json"):
        try:
            data = await request.body()
            try:
                body = orjson.loads(data)
            except orjson.JSONDecodeError:  # the standard parser also reads NaN and Infinity (refused later, named)
                body = json.loads(data)
        except ValueError:
            raise BadParameterError("the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise BadParameterError('expected a JSON object, e.g. {"vector": [...], "top": 10}')
        fields: Dict[str, Any] = body
    elif ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        form = await request.form()
        fields = {k: v for k, v in form.multi_items()}
    elif not ctype and not await request.body():
        fields = {}
    else:
        raise BadParameterError("send a multipart form (image or id, top, box, ...) or JSON "
                                '{"vector": [...] or "id": i, "top": k, ...}')
    unknown = sorted(set(fields) - set(SEARCH_FIELDS))
    if unknown:
        raise BadParameterError(f"unknown field '{unknown[0][:40]}'; the fields are: {', '.join(SEARCH_FIELDS)}")
    return fields


def create_app(index_dir: Optional[PathLike] = None, model: Optional[PathLike] = None,
               concepts: Optional[PathLike] = None, max_upload_mb: float = 20.0, *,
               service: Optional[SearchService] = None, max_pixels: Optional[int] = None,
               forward_workers: int = 1, device: Optional[str] = None, token: Optional[str] = None,
               reload_interval: float = 1.0) -> FastAPI:
    """The FastAPI application serving the index folder ``index_dir`` (its model, or ``model``;
    ``concepts`` for concept-masked GeM), or an already open ``service``.

    max_upload_mb: the largest upload (the request body may hold 64 KiB more for the other
    fields); max_pixels: the largest upload in pixels (default Pillow's ``MAX_IMAGE_PIXELS``, about
    89 MP); forward_workers: forward passes at once on the CPU; token: the bearer token every data
    request needs (default ``$GEMSEG_TOKEN``; none: open, :mod:`~retrieval.serve.access`);
    reload_interval: seconds between looks at the index folder (0: never reload).
    """
    owned = service is None
    if max_upload_mb <= 0:
        raise BadParameterError(f"max_upload_mb must be > 0, got {max_upload_mb}")
    token = resolve_token(token)
    if service is None:
        if index_dir is None:
            raise BadParameterError("create_app needs an index folder or a service")
        service = SearchService.open(index_dir, model, concepts, forward_workers=forward_workers, device=device,
                                     reload_interval=reload_interval)
    svc = service
    upload_bytes = int(max_upload_mb * 2 ** 20)
    pixels = int(max_pixels or Image.MAX_IMAGE_PIXELS or 89_478_485)
    static = _read_static()
    metrics = ServerMetrics(svc.info)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if owned:
            svc.close()

    app = FastAPI(title="gemseg search", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    # added last = outermost: observe ⊃ token ⊃ body limit ⊃ routes
    app.add_middleware(BodyLimit, max_bytes=upload_bytes + FORM_OVERHEAD, upload_bytes=upload_bytes,
                       on_refuse=lambda: metrics.refuse("too_large"))
    app.add_middleware(RequireToken, token=token)
    app.add_middleware(Observe, metrics=metrics)
    app.state.service = svc
    app.state.metrics = metrics

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if isinstance(exc, UploadTooLarge):
            raise exc  # to BodyLimit, which discards the rest of the body before answering
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

    # -- probes and metrics --------------------------------------------------------------------
    @app.get("/healthz")
    def healthz() -> Dict[str, Any]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> Response:
        st = svc.state
        ready = st is not None and svc.net is not None
        return JSONResponse({"ready": ready, "commit": st.commit if st is not None else None},
                            200 if ready else 503, headers=dict(_HEADERS))

    @app.get("/metrics")
    def scrape() -> Response:
        body, ctype = metrics.exposition()
        return Response(body, media_type=ctype, headers=dict(_HEADERS))

    # -- the API -------------------------------------------------------------------------------
    @app.get("/api/info")
    def info() -> Dict[str, Any]:
        return dict(svc.info(), max_upload_mb=max_upload_mb, max_pixels=pixels, token_required=token is not None,
                    rerankers=reranker_names())

    def decode(data: bytes, name: str) -> Tuple[Image.Image, float]:
        t0 = time.perf_counter()
        try:
            img = decode_upload(data, name, pixels)
        except ImageError as e:
            metrics.refuse(refusal_reason(str(e)))
            raise
        return img, time.perf_counter() - t0

    def query_of(fields: Dict[str, Any], st: IndexState) -> Tuple[SearchQuery, Optional[Image.Image], float]:
        """The query: an upload (decoded, its box checked against its size), an indexed id (its
        stored descriptor; with a box, its file is read to check the box) or a vector; the
        decoded upload and the seconds its decoding took."""
        image, vector = fields.get("image"), fields.get("vector")
        image_id = fields.get("id")
        has_id = image_id is not None and str(image_id).strip() != ""
        if isinstance(image, str):
            raise BadParameterError("'image' must be a file (multipart upload)")
        if sum([image is not None, has_id, vector is not None]) != 1:
            raise BadParameterError("give exactly one of 'image' (an uploaded file), 'id' (an indexed image) "
                                    "or 'vector' (a descriptor)")
        box = _str_field(fields, "box")
        if image is not None:
            name = upload_name(image.filename)
            img, seconds = decode(image.file.read(), name)
            return SearchQuery(image=img, box=parse_box(box, img.size), label=name), img, seconds
        if vector is not None:
            if box is not None and box.strip():
                raise BadParameterError("a query by vector has no image to crop to a box")
            return SearchQuery(vector=svc.check_vector(vector, st)), None, 0.0
        if isinstance(image_id, bool) or not isinstance(image_id, (str, int)):
            raise BadParameterError(f"id must be an indexed image's id, got {type(image_id).__name__}")
        i = svc.image_id(str(image_id).strip(), st)
        if box is None or not box.strip():
            return SearchQuery(id=i), None, 0.0
        return SearchQuery(id=i, box=parse_box(box, svc.indexed_size(i, st))), None, 0.0

    def run_search(fields: Dict[str, Any], st: Optional[IndexState] = None, batch: bool = True) -> Dict[str, Any]:
        st = st or svc.state  # one state for the whole request
        top = _int_field(fields, "top", 10)
        qe, alpha = _int_field(fields, "qe", 0), _float_field(fields, "alpha", 3.0)
        nprobe, rerank = _int_field(fields, "nprobe", None), _str_field(fields, "rerank")
        return_vectors, preview = _bool_field(fields, "return_vectors"), _bool_field(fields, "preview")
        query, img, seconds = query_of(fields, st)
        doc = svc.search(query, top=top, qe=qe, alpha=alpha, nprobe=nprobe, rerank=rerank,
                         return_vectors=return_vectors, state=st, batch=batch)
        if img is not None:
            doc["stages"] = dict({"decode": round(seconds * 1000, 3)}, **doc["stages"])
            if preview:
                doc["preview"] = jpeg_data_url(img)
        metrics.stage_times(doc["stages"])
        return doc

    @app.post("/api/search")
    async def search(request: Request) -> Dict[str, Any]:
        fields = await search_fields(request)
        st = svc.state
        if st.quick and plain_lookup(fields):  # answered here: the hop to a thread costs more
            return run_search(fields, st, batch=False)
        return await run_in_threadpool(run_search, fields, st)

    @app.get("/api/images/{image_id:path}")
    def thumbnail(image_id: str, size: int = Query(256)) -> Response:
        st = svc.state
        i = svc.image_id(image_id, st)
        if not THUMB_SIZES[0] <= size <= THUMB_SIZES[1]:
            raise BadParameterError(f"size must be {THUMB_SIZES[0]} … {THUMB_SIZES[1]}, got {size}")
        # no-cache: an id can name another image after a compaction, and a file can vanish
        return Response(svc.thumbnail(i, size, st), media_type="image/jpeg",
                        headers=dict(_HEADERS, **{"Cache-Control": "no-cache"}))

    @app.post("/api/coseg")
    async def coseg(request: Request) -> Dict[str, Any]:
        st = svc.state
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
            img, _ = await run_in_threadpool(decode, data, name)
            items.append((None, name, img))
        for x in ids:
            i = svc.image_id(str(x).strip(), st)
            items.append((i, st.index.paths[i], await run_in_threadpool(svc.indexed_image, i, None, st)))
        return await run_in_threadpool(svc.cosegment, items, k)

    return app
