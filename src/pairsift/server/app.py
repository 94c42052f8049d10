"""The search web app: FastAPI over :class:`~pairsift.retrieval.searcher.Searcher` + a static page.

Safety rules (docs/design.md §7): the app never reads a path from a request (images are named by
uid and looked up in the workspace; static files come from a fixed list), never evaluates
anything, caps the query length, ``k`` and uploads, and answers every refusal with a 4xx and a
one-line ``detail``. Uploads must declare their length (411 otherwise) so an oversized body is
refused (413) before it is read. Requests must name a loopback host unless the app is told
otherwise, which stops DNS-rebinding pages from reading the API through the browser.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
from fastapi import FastAPI, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from ..io.images import ImageDecodeError, decode_image
from ..io.records import valid_uid
from ..io.sources import read_image_bytes
from ..pipeline.explain import explain
from ..retrieval.searcher import VERDICTS, Hit, Searcher
from ..workspace import WorkspaceError

MAX_QUERY_CHARS = 500
MAX_K = 100
MAX_UPLOAD_BYTES = 10 * 2**20
MAX_UPLOAD_PIXELS = 50_000_000  # uploads above this are refused as decompression bombs
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
    """Refuse a request body over ``limit`` bytes, or of unknown length, before reading it."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
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
        await self.app(scope, receive, send)


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
    thumbs: OrderedDict[str, bytes] = OrderedDict()
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
                           "upload_bytes": max_upload_bytes, "upload_types": UPLOAD_TYPES}}

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
        try:
            image = decode_image(data, max_pixels=MAX_UPLOAD_PIXELS).image
        except ImageDecodeError as exc:
            raise HTTPException(415, f"the upload is not a readable image ({exc})") from None
        try:
            hits = await run_in_threadpool(searcher.search_image, image, k, verdict,
                                           reason or None)
        except (ValueError, WorkspaceError) as exc:
            raise HTTPException(400, str(exc)) from None
        locations.remember(hits)
        return _hits_json({"image": file.filename, "k": k, "verdict": verdict,
                           "reason": reason}, searcher.image_space, hits)

    @app.get("/api/thumb/{uid}")
    def thumb(uid: str) -> Response:
        uid = _uid(uid)
        if uid not in thumbs:
            row = locations.row(uid)
            if row is None:
                raise HTTPException(404, f"no sample with uid {uid}")
            options = searcher.ws.manifest["sources"].get(row["source"], {}).get("options", {})
            try:
                thumbs[uid] = _thumbnail(row, options.get("image_column"))
            except (ImageDecodeError, OSError) as exc:
                raise HTTPException(404, f"the image of {uid} cannot be read: {exc}") from None
            while len(thumbs) > THUMB_CACHE:
                thumbs.popitem(last=False)
        return Response(thumbs[uid], media_type="image/jpeg",
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
