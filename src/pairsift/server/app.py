"""The search web app: FastAPI over :class:`~pairsift.retrieval.searcher.Searcher` + a static page.

Safety rules (docs/design.md §7): the app never reads a path from a request (images are named by
uid and looked up in the workspace; static files come from a fixed list), never evaluates
anything, caps the query length, ``k`` and uploads, and answers every refusal with a 4xx and a
one-line ``detail``. Uploads must declare their length (411 otherwise) so an oversized body is
refused (413) before it is read; the bytes actually read are counted too, since a chunked body
can run past what its Content-Length says. Uploads are also capped in decoded pixels, and
images (uploads and thumbnails) are decoded on worker threads, a few at a time, so a bomb
neither blocks the event loop nor multiplies its memory by the number of requests. Requests
must name a loopback host unless the app is told otherwise, which stops DNS-rebinding pages
from reading the API through the browser.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
from anyio import CapacityLimiter, to_thread
from fastapi import FastAPI, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from PIL import Image
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..io.images import ImageDecodeError, decode_image
from ..io.records import valid_uid
from ..io.sources import read_image_bytes
from ..pipeline.explain import explain
from ..retrieval.searcher import VERDICTS, Hit, Searcher
from ..stages.embed import DRAFT_SIZE
from ..workspace import WorkspaceError

MAX_QUERY_CHARS = 500
MAX_K = 100
MAX_UPLOAD_BYTES = 10 * 2**20
MAX_UPLOAD_PIXELS = 4096 * 4096  # a 16 MP photo; above it an upload is refused as a bomb
DECODE_SLOTS = 2  # images decoding at once (uploads and thumbnails): bounds memory and CPU
UPLOAD_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp", "image/tiff")
THUMB_SIZE = 256
THUMB_CACHE = 512
LOCATION_CACHE = 100_000  # uids of recent hits -> their workspace row, for thumbnails
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
STATIC = Path(__file__).resolve().parent / "static"
STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
CSP = ("default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'")


class UploadLimit:
    """Refuse a request body over ``limit`` bytes, or of unknown length, before reading it, and
    stop reading one that runs past the limit whatever its headers said."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] in ("POST", "PUT", "PATCH"):
            length = dict(scope["headers"]).get(b"content-length")
            refusal = None
            if length is None or not length.isdigit():
                refusal = (411, "send the upload with a Content-Length header")
            elif int(length) > self.limit:
                refusal = (413, f"the upload is {int(length):,} bytes; the limit is "
                                f"{self.limit:,} bytes")
            if refusal:
                response = JSONResponse({"detail": refusal[1]}, status_code=refusal[0],
                                        headers={"Connection": "close"})
                await response(scope, receive, send)
                return
        await self.app(scope, self._counting(receive), send)

    def _counting(self, receive: Receive) -> Receive:
        """``receive`` that raises a 413 once more than ``limit`` body bytes have arrived.
        FastAPI re-raises an HTTPException met while reading the body, so the app answers it."""
        read = 0

        async def receive_within_limit() -> Message:
            nonlocal read
            message = await receive()
            read += len(message.get("body", b""))
            if read > self.limit:
                raise HTTPException(413, f"the upload is longer than the limit of "
                                         f"{self.limit:,} bytes", headers={"Connection": "close"})
            return message

        return receive_within_limit


class _Locations:
    """uid -> (part, row) of samples recently returned, with a workspace scan as fallback."""

    def __init__(self, searcher: Searcher):
        self.searcher = searcher
        self._known: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, hits: list[Hit]) -> None:
        with self._lock:
            for hit in hits:
                self._known[hit.uid] = (hit.part, hit.row)
                self._known.move_to_end(hit.uid)
            while len(self._known) > LOCATION_CACHE:
                self._known.popitem(last=False)

    def row(self, uid: str) -> dict[str, Any] | None:
        with self._lock:
            where = self._known.get(uid)
        ws = self.searcher.ws
        if where is not None:
            return ws.read_part(where[0]).slice(where[1], 1).to_pylist()[0]
        for _, table in ws.iter_parts():
            hit = table.filter(pc.equal(table.column("uid"), uid))
            if hit.num_rows:
                return hit.to_pylist()[0]
        return None


def _check_query(k: int, verdict: str, reason: str | None) -> None:
    if not 1 <= k <= MAX_K:
        raise HTTPException(400, f"k must be between 1 and {MAX_K}, got {k}")
    if verdict not in VERDICTS:
        raise HTTPException(400, f"verdict must be one of {', '.join(VERDICTS)}")
    if reason is not None and len(reason) > MAX_QUERY_CHARS:
        raise HTTPException(400, f"the reason is over {MAX_QUERY_CHARS} characters")


def _hits_json(query: dict[str, Any], space: str, hits: list[Hit]) -> dict[str, Any]:
    return {"query": query, "space": space,
            "hits": [{"rank": h.rank, "uid": h.uid, "score": h.score,
                      "confidence": h.confidence, "key": h.key, "caption": h.caption,
                      "verdict": h.verdict, "reasons": h.reasons} for h in hits]}


class _Thumbnails:
    """Thumbnail JPEGs by uid, least recently used dropped first. Concurrent requests for one
    uid share one decode; decodes run on worker threads, at most ``limiter``'s at once."""

    def __init__(self, make: Callable[[str], bytes], limiter: CapacityLimiter):
        self._make, self._limiter = make, limiter
        self._done: OrderedDict[str, bytes] = OrderedDict()
        self._pending: dict[str, asyncio.Task[bytes]] = {}  # touched on the event loop only

    async def get(self, uid: str) -> bytes:
        if uid in self._done:
            self._done.move_to_end(uid)
            return self._done[uid]
        if uid not in self._pending:
            self._pending[uid] = asyncio.ensure_future(self._build(uid))
        return await asyncio.shield(self._pending[uid])  # one client leaving stops no one

    async def _build(self, uid: str) -> bytes:
        try:
            data = await to_thread.run_sync(self._make, uid, limiter=self._limiter)
        finally:
            del self._pending[uid]  # a failure is not cached: the next request tries again
        self._done[uid] = data
        while len(self._done) > THUMB_CACHE:
            self._done.popitem(last=False)
        return data


def _query_image(data: bytes) -> Image.Image:
    """An upload decoded as the collection was embedded; a bomb is a 413 naming the limit."""
    try:
        return decode_image(data, max_pixels=MAX_UPLOAD_PIXELS, draft=DRAFT_SIZE).image
    except ImageDecodeError as exc:
        if exc.reason == "decompression_bomb":
            raise HTTPException(413, f"the image is too large ({exc.message}); the limit is "
                                     f"{MAX_UPLOAD_PIXELS:,} pixels: downscale it") from None
        raise HTTPException(415, f"the upload is not a readable image ({exc})") from None


def _thumbnail(row: dict[str, Any], image_column: str | None) -> bytes:
    data = read_image_bytes(row["container"], row["shard"], row["offset"], row["length"],
                            image_column)
    image = decode_image(data, draft=(THUMB_SIZE, THUMB_SIZE)).image
    image.thumbnail((THUMB_SIZE, THUMB_SIZE))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()


def create_app(workspace: str | Path, *, model: str | None = None, device: str = "cpu",
               allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS,
               max_upload_bytes: int = MAX_UPLOAD_BYTES) -> FastAPI:
    """The web app for one workspace; the model and the indexes load before it returns."""
    searcher = Searcher(workspace, model=model, device=device)
    searcher.warm()
    locations = _Locations(searcher)
    decoders = CapacityLimiter(DECODE_SLOTS)
    app = FastAPI(title="pairsift search", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(UploadLimit, limit=max_upload_bytes)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> FileResponse:
        if name not in STATIC_FILES:
            raise HTTPException(404, "no such static file")
        return FileResponse(STATIC / name, media_type=STATIC_FILES[name])

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        searcher.decisions.refresh()
        return {"workspace": searcher.ws.root.name, "samples": searcher.ws.num_samples(),
                "model": searcher.model, "image_space": searcher.image_space,
                "reasons": searcher.decisions.all_reasons(), "verdicts": list(VERDICTS),
                "limits": {"query_chars": MAX_QUERY_CHARS, "k": MAX_K,
                           "upload_bytes": max_upload_bytes, "upload_pixels": MAX_UPLOAD_PIXELS,
                           "upload_types": UPLOAD_TYPES}}

    @app.get("/api/search")
    def search_text(q: str, k: int = 10, verdict: str = "all",
                    reason: str | None = None) -> dict[str, Any]:
        if len(q) > MAX_QUERY_CHARS:
            raise HTTPException(400, f"the query is {len(q):,} characters; the limit is "
                                     f"{MAX_QUERY_CHARS}")
        _check_query(k, verdict, reason)
        try:
            hits = searcher.search_text(q, k, verdict, reason or None)
        except (ValueError, WorkspaceError) as exc:
            raise HTTPException(400, str(exc)) from None
        locations.remember(hits)
        return _hits_json({"text": q, "k": k, "verdict": verdict, "reason": reason}, "image",
                          hits)

    @app.post("/api/search/image")
    async def search_image(file: UploadFile, k: int = 10, verdict: str = "all",
                           reason: str | None = None) -> dict[str, Any]:
        _check_query(k, verdict, reason)
        if file.content_type not in UPLOAD_TYPES:
            raise HTTPException(415, f"upload an image ({', '.join(UPLOAD_TYPES)}); got "
                                     f"content type {file.content_type!r}")
        data = await file.read()

        def search() -> list[Hit]:  # decoding and embedding hold the pixels: one slot for both
            image = _query_image(data)
            try:
                return searcher.search_image(image, k, verdict, reason or None)
            except (ValueError, WorkspaceError) as exc:
                raise HTTPException(400, str(exc)) from None

        hits = await to_thread.run_sync(search, limiter=decoders)
        locations.remember(hits)
        return _hits_json({"image": file.filename, "k": k, "verdict": verdict,
                           "reason": reason}, searcher.image_space, hits)

    def make_thumbnail(uid: str) -> bytes:
        row = locations.row(uid)
        if row is None:
            raise HTTPException(404, f"no sample with uid {uid}")
        options = searcher.ws.sources().get(row["source"], {}).get("options", {})
        try:
            return _thumbnail(row, options.get("image_column"))
        except (ImageDecodeError, OSError) as exc:
            raise HTTPException(404, f"the image of {uid} cannot be read: {exc}") from None

    thumbs = _Thumbnails(make_thumbnail, decoders)

    @app.get("/api/thumb/{uid}")
    async def thumb(uid: str) -> Response:
        return Response(await thumbs.get(_uid(uid)), media_type="image/jpeg",
                        headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/explain/{uid}")
    def explain_sample(uid: str) -> Response:
        uid = _uid(uid)
        try:
            report = explain(searcher.ws.root, uid)
        except WorkspaceError as exc:
            raise HTTPException(404, str(exc)) from None
        return Response(json.dumps(report, default=str), media_type="application/json")

    return app


def _uid(value: str) -> str:
    uid = valid_uid(value)
    if uid is None:
        raise HTTPException(404, "a uid is 32 hexadecimal characters")
    return uid


@contextmanager
def running(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``app`` on a background thread (port 0: a free one); yields the base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError(f"the server did not start on {host}:{port}")
            time.sleep(0.02)
        bound = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
