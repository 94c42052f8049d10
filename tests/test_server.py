"""The search server over real HTTP: answers, limits, and refusals that leave it answering."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image
from test_index import searchable_workspace, truth_by_key, variant  # noqa: F401 - fixture

from pairsift.server.app import MAX_K, MAX_QUERY_CHARS, MAX_UPLOAD_BYTES, create_app, running


@pytest.fixture(scope="module")
def base_url(searchable_workspace) -> Iterator[str]:  # noqa: F811 - the imported fixture
    with running(create_app(searchable_workspace)) as url:
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
                              "upload_bytes": MAX_UPLOAD_BYTES,
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
