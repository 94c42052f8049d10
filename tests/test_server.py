"""The search server over real HTTP: answers, limits, and refusals that leave it answering."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.client
import io
import select
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pyarrow.compute as pc
import pytest
from PIL import Image
from test_index import searchable_workspace, truth_by_key, variant  # noqa: F401 - fixture

from pairsift import Workspace, ingest
from pairsift.server import app as server_app
from pairsift.server.app import (
    DECODE_SLOTS,
    MAX_K,
    MAX_QUERY_CHARS,
    MAX_UPLOAD_BYTES,
    MAX_UPLOAD_PIXELS,
    create_app,
    running,
)

HUGE_SIDE = 7000  # 49 M pixels: over the upload cap, under ingest's
SLOW_DECODE_S = 0.2


@functools.cache
def bomb_png(side: int) -> bytes:
    """One colour: a few tens of kB of PNG that decode to ``side`` x ``side`` RGB pixels."""
    out = io.BytesIO()
    Image.new("RGB", (side, side), (90, 140, 200)).save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def served_workspace(searchable_workspace, tmp_path_factory) -> Path:  # noqa: F811
    """The searchable demo plus a source ``huge``: one 7000 x 7000 PNG, ingested."""
    root = tmp_path_factory.mktemp("served")
    shutil.copytree(searchable_workspace, root / "ws")
    (root / "huge").mkdir()
    (root / "huge" / "huge.png").write_bytes(bomb_png(HUGE_SIDE))
    ingest(root / "huge", root / "ws", name="huge", progress=False)
    return root / "ws"


@pytest.fixture(scope="module")
def base_url(served_workspace) -> Iterator[str]:
    with running(create_app(served_workspace)) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=60) as c:
        yield c


def raw(base_url: str, request: bytes, body: bytes = b"") -> tuple[int | None, bytes]:
    """Send bytes exactly as given (no client normalises the path); the status (None when
    the server reset the connection without an answer) and the response."""
    host, port = urlsplit(base_url).hostname, urlsplit(base_url).port
    data = b""
    with socket.create_connection((host, port), timeout=30) as s:
        try:
            s.sendall(request + body)
            while chunk := s.recv(65536):
                data += chunk
        except ConnectionResetError:  # closed while part of the request was still unread
            pass
    return (int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else None), data


def assert_still_answering(client: httpx.Client) -> None:
    response = client.get("/api/search", params={"q": "a tabby cat", "k": 1})
    assert response.status_code == 200 and len(response.json()["hits"]) == 1


def assert_answers_quickly(base_url: str) -> None:
    """``/api/info`` over a new connection in under 100 ms: the event loop is free."""
    conn = http.client.HTTPConnection(urlsplit(base_url).hostname, urlsplit(base_url).port,
                                      timeout=30)
    try:
        start = time.perf_counter()
        conn.request("GET", "/api/info")
        status = conn.getresponse().status
        elapsed = time.perf_counter() - start
    finally:
        conn.close()
    assert status == 200 and elapsed < 0.1, f"/api/info took {1000 * elapsed:.0f} ms"


def stream_until_answered(base_url: str, head: bytes, chunks: Iterator[bytes]) -> tuple[
        int | None, bytes, int]:
    """Send ``head``, then ``chunks`` until the server answers; the status, the response and
    how many bytes of ``chunks`` were sent."""
    host, port = urlsplit(base_url).hostname, urlsplit(base_url).port
    sent, data = 0, b""
    with socket.create_connection((host, port), timeout=60) as s:
        try:
            s.sendall(head)
            for chunk in chunks:
                if select.select([s], [], [], 0)[0]:
                    break
                s.sendall(chunk)
                sent += len(chunk)
        except (ConnectionResetError, BrokenPipeError):
            pass  # the server answered and closed while the request was still coming
        with contextlib.suppress(ConnectionResetError):  # an answer before the reset still reads
            while piece := s.recv(65536):
                data += piece
    return (int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else None), data, sent


def upload(client: httpx.Client, data: bytes) -> httpx.Response:
    return client.post("/api/search/image", params={"k": 1},
                       files={"file": ("a.png", data, "image/png")})


def huge_uid(workspace: Path) -> str:
    for _, table in Workspace.open(workspace).iter_parts(["uid", "source"]):
        uids = table.filter(pc.equal(table.column("source"), "huge")).column("uid")
        if len(uids):
            return uids[0].as_py()
    raise AssertionError("the huge image was not ingested")


@pytest.fixture
def decodes(monkeypatch) -> list[dict]:
    """Every image decode the server makes: whether it ran on the event loop and how many ran
    at once. Each lasts at least SLOW_DECODE_S more, as a big image's decode would."""
    real, lock, running_now, log = server_app.decode_image, threading.Lock(), [0], []

    def decode(*args, **kwargs):
        try:
            asyncio.get_running_loop()
            on_loop = True
        except RuntimeError:
            on_loop = False
        with lock:
            running_now[0] += 1
            log.append({"on_loop": on_loop, "at_once": running_now[0]})
        try:
            time.sleep(SLOW_DECODE_S)
            return real(*args, **kwargs)
        finally:
            with lock:
                running_now[0] -= 1

    monkeypatch.setattr(server_app, "decode_image", decode)
    return log


def png_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


# -- answers -----------------------------------------------------------------------------------
def test_page_and_static_files_with_a_strict_policy(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="query"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http" not in page.text.replace("http-equiv", "")  # no external URL, no CDN
    script = client.get("/static/app.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascr")
    assert "innerHTML" not in script.text


def test_text_search_json(client, demo_corpus):
    response = client.get("/api/search", params={"q": "a tabby cat", "k": 3, "verdict": "kept"})
    assert response.status_code == 200
    body = response.json()
    truth = truth_by_key(demo_corpus)
    assert [truth[h["key"]]["photo"] for h in body["hits"]] == ["chelsea"] * 3
    assert {h["verdict"] for h in body["hits"]} == {"keep"} and body["space"] == "image"


def test_image_upload_finds_its_duplicate_with_confidence(client, demo_corpus):
    query = variant(demo_corpus / "images" / "img_0050.png")
    response = client.post("/api/search/image", params={"k": 3},
                           files={"file": ("moto.jpg", query, "image/jpeg")})
    assert response.status_code == 200
    top = response.json()["hits"][0]
    assert truth_by_key(demo_corpus)[top["key"]]["group"] == "img_0050.png"
    assert top["confidence"] > 0.8


def test_thumbnail_and_explain_by_uid(client):
    uid = client.get("/api/search", params={"q": "a rocket", "k": 1}).json()["hits"][0]["uid"]
    thumb = client.get(f"/api/thumb/{uid}")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 256
    report = client.get(f"/api/explain/{uid}").json()
    assert report["uid"] == uid and report["sample"]["key"] and report["decisions"]
    unknown = "0" * 32
    assert client.get(f"/api/thumb/{unknown}").status_code == 404
    assert client.get(f"/api/explain/{unknown}").status_code == 404


def test_info_lists_reasons_and_limits(client):
    info = client.get("/api/info").json()
    assert "clip_score_below" in info["reasons"]
    assert info["limits"] == {"query_chars": MAX_QUERY_CHARS, "k": MAX_K,
                              "upload_bytes": MAX_UPLOAD_BYTES, "upload_pixels": MAX_UPLOAD_PIXELS,
                              "upload_types": info["limits"]["upload_types"]}


# -- refusals ----------------------------------------------------------------------------------
@pytest.mark.parametrize("path", [
    "/static/../../pyproject.toml",
    "/static/..%2f..%2fpyproject.toml",
    "/static/%2e%2e/%2e%2e/README.md",
    "/static/index.html/../../../../etc/passwd",
    "/api/thumb/..%2f..%2f..%2fetc%2fpasswd",
    "/api/thumb/../../../../etc/passwd",
    "/api/explain/%2e%2e%2fpairsift.json",
    "/static/%2fetc%2fpasswd",
])
def test_path_traversal_is_refused(base_url, client, path):
    status, data = raw(base_url, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                 f"Connection: close\r\n\r\n".encode())
    assert 400 <= status < 500
    assert b"root:" not in data and b"[project]" not in data and b'"parts"' not in data
    assert_still_answering(client)


def test_huge_query_is_refused(client):
    response = client.get("/api/search", params={"q": "cat " * 2000})
    assert response.status_code == 400
    assert f"limit is {MAX_QUERY_CHARS}" in response.json()["detail"]
    assert_still_answering(client)


def test_query_longer_than_the_http_parser_allows_is_refused(base_url, client):
    status, _ = raw(base_url, b"GET /api/search?q=" + b"a" * 200_000
                    + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert status is None or 400 <= status < 500  # uvicorn answers 400 and closes
    assert_still_answering(client)


@pytest.mark.parametrize(("k", "status", "words"), [
    (10**9, 400, f"between 1 and {MAX_K}"), (0, 400, "between 1"), ("lots", 422, "integer")])
def test_absurd_k_is_refused(client, k, status, words):
    response = client.get("/api/search", params={"q": "cat", "k": k})
    assert response.status_code == status and words in str(response.json()["detail"])
    assert_still_answering(client)


def test_unknown_filters_are_refused(client):
    assert client.get("/api/search", params={"q": "cat", "verdict": "x"}).status_code == 400
    response = client.get("/api/search", params={"q": "cat", "reason": "nope"})
    assert response.status_code == 400 and "reason" in response.json()["detail"]


def test_huge_upload_is_refused_before_it_is_read(base_url, client):
    size = MAX_UPLOAD_BYTES + 1
    head = (f"POST /api/search/image HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {size}\r\n"
            f"Content-Type: multipart/form-data; boundary=x\r\n\r\n").encode()
    status, data = raw(base_url, head, b"--x\r\n")  # the rest is never sent
    assert status == 413 and b"limit is" in data
    assert_still_answering(client)


def test_upload_just_over_the_limit_is_refused(client):
    blob = png_bytes() + b"\0" * MAX_UPLOAD_BYTES
    try:
        response = client.post("/api/search/image", files={"file": ("a.png", blob, "image/png")})
        assert response.status_code == 413
    except httpx.TransportError:  # the server may close before the client finished sending
        pass
    assert_still_answering(client)


def test_upload_without_length_is_refused(base_url, client):
    head = (b"POST /api/search/image HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    status, data = raw(base_url, head, b"0\r\n\r\n")
    assert status == 411 and b"Content-Length" in data
    assert_still_answering(client)


def test_chunked_upload_longer_than_its_content_length_is_cut_off_at_the_limit(base_url):
    head = (b"POST /api/search/image HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n"
            b"Transfer-Encoding: chunked\r\nContent-Type: multipart/form-data; boundary=x\r\n"
            b"\r\n")
    part = (b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n")
    block = b"\0" * 2**20
    planned = 8 * MAX_UPLOAD_BYTES

    def chunks() -> Iterator[bytes]:
        yield b"%x\r\n%s\r\n" % (len(part), part)
        for _ in range(planned // len(block)):
            yield b"%x\r\n%s\r\n" % (len(block), block)
        yield b"9\r\n\r\n--x--\r\n\r\n0\r\n\r\n"

    status, data, sent = stream_until_answered(base_url, head, chunks())
    assert status == 413 and b"limit of" in data
    assert sent < planned  # the server answered without reading the rest
    assert_answers_quickly(base_url)


def test_image_bomb_upload_is_refused_naming_the_pixel_limit(base_url, client):
    bomb = bomb_png(HUGE_SIDE)
    assert len(bomb) < MAX_UPLOAD_BYTES / 50  # well within the byte limit
    response = upload(client, bomb)
    assert response.status_code == 413
    assert f"{MAX_UPLOAD_PIXELS:,} pixels" in response.json()["detail"]
    assert_answers_quickly(base_url)


def test_uploads_decode_off_the_event_loop_a_few_at_a_time(base_url, client, decodes):
    with ThreadPoolExecutor(8) as pool:
        answers = [pool.submit(upload, client, png_bytes()) for _ in range(8)]
        time.sleep(SLOW_DECODE_S / 2)
        assert_answers_quickly(base_url)  # while the uploads decode
        assert [a.result().status_code for a in answers] == [200] * 8
    assert len(decodes) == 8 and not any(d["on_loop"] for d in decodes)
    assert max(d["at_once"] for d in decodes) <= DECODE_SLOTS
    assert_answers_quickly(base_url)


def test_cold_thumbnails_of_a_huge_image_share_one_decode(base_url, client, served_workspace,
                                                          decodes):
    uid = huge_uid(served_workspace)
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: client.get(f"/api/thumb/{uid}"), range(6)))
    assert [a.status_code for a in answers] == [200] * 6
    assert len({a.content for a in answers}) == 1
    assert max(Image.open(io.BytesIO(answers[0].content)).size) == 256
    assert len(decodes) == 1
    assert client.get(f"/api/thumb/{uid}").content == answers[0].content
    assert len(decodes) == 1  # the cached thumbnail is reused
    assert_answers_quickly(base_url)


@pytest.mark.parametrize(("name", "data", "content_type", "words"), [
    ("notes.txt", b"hello", "text/plain", "content type"),
    ("fake.png", b"this is not a png at all", "image/png", "not a readable image"),
    ("page.html", b"<script>alert(1)</script>", "text/html", "content type"),
])
def test_wrong_content_is_refused(client, name, data, content_type, words):
    response = client.post("/api/search/image", files={"file": (name, data, content_type)})
    assert response.status_code == 415 and words in response.json()["detail"]
    assert_still_answering(client)


def test_foreign_host_header_is_refused(client):
    response = client.get("/api/info", headers={"Host": "attacker.example"})
    assert response.status_code == 400
    assert_still_answering(client)


def test_serve_binds_to_loopback_by_default(searchable_workspace, monkeypatch):  # noqa: F811
    import uvicorn

    from pairsift.pipeline.search import serve

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    serve(searchable_workspace, port=9999)
    app, options = calls[0]
    assert options == {"host": "127.0.0.1", "port": 9999}
    hosts = [m.kwargs["allowed_hosts"] for m in app.user_middleware
             if m.cls.__name__ == "TrustedHostMiddleware"]
    assert hosts == [["127.0.0.1", "localhost", "::1", "[::1]"]]
