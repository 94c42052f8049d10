"""Memory and latency of ``pairsift serve`` under hostile requests (issue 14).

    python benchmarks/bench_server_attacks.py

The workspace (built once in ``_work/ws-server``): the 64-sample synthetic WebDataset corpus
plus a source ``huge`` holding one 7000 x 7000 PNG, ingested, embedded and indexed. Each attack
gets a fresh server process (``pairsift.pipeline.search.serve``), warmed with a text search, an
image search and a thumbnail; its resident memory then is "idle", its peak RSS is reset
(``/proc/PID/clear_refs``) and read back (``VmHWM``) once every attack request has an answer.
Meanwhile ``/api/info`` is polled to see whether the server keeps answering.

Attacks: a 1 GiB chunked upload whose ``Content-Length`` says 100; 8 concurrent 7000 x 7000
PNG bombs (47 kB each); 8 concurrent 4000 x 4000 PNGs (just under the upload pixel cap, so
they are decoded); 6 concurrent cold thumbnails of the huge ingested image.
Set PYTHONPATH to the ``src`` of the code to serve (the script prints which one it serves).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow.compute as pc
from _common import WORK, corpus, machine
from PIL import Image

import pairsift
from pairsift import Workspace, embed, index, ingest

MiB = 2**20
SERVE = ("import sys; from pairsift.pipeline.search import serve; "
         "serve(sys.argv[1], port=int(sys.argv[2]))")
BOUNDARY = "pairsiftbench"


def bomb_png(side: int) -> bytes:
    """One colour: a few kB of PNG that decode to ``side`` x ``side`` RGB pixels."""
    out = io.BytesIO()
    Image.new("RGB", (side, side), (90, 140, 200)).save(out, "PNG")
    return out.getvalue()


def workspace() -> Path:
    root = WORK / "ws-server"
    if (root / "indexes").exists():
        return root
    huge = WORK / "huge-image"
    huge.mkdir(parents=True, exist_ok=True)
    (huge / "huge.png").write_bytes(bomb_png(7000))
    ingest(corpus(64), root, progress=False)
    ingest(huge, root, name="huge", progress=False)
    embed(root, progress=False)
    index(root, progress=False)
    return root


def huge_uid(root: Path) -> str:
    for _, table in Workspace.open(root).iter_parts(["uid", "source"]):
        uids = table.filter(pc.equal(table.column("source"), "huge")).column("uid")
        if len(uids):
            return uids[0].as_py()
    raise SystemExit(f"{root} has no sample from the source 'huge': remove it and run again")


class Server:
    """``pairsift serve`` in a child process on a free port."""

    def __init__(self, root: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        with open(WORK / "server.log", "a") as log:  # uvicorn's access log, one line a request
            self.process = subprocess.Popen([sys.executable, "-c", SERVE, str(root),
                                             str(self.port)], stdout=log, stderr=log)
        deadline = time.monotonic() + 300
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.2)

    def answers(self) -> bool:
        try:
            return self.get("/api/info")[0] == 200
        except OSError:
            return False

    def get(self, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def upload(self, data: bytes) -> int:
        head = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
                f'filename="a.png"\r\nContent-Type: image/png\r\n\r\n').encode()
        body = head + data + f"\r\n--{BOUNDARY}--\r\n".encode()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        try:
            conn.request("POST", "/api/search/image?k=1", body, headers={
                "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
            return conn.getresponse().status
        except (ConnectionError, http.client.HTTPException):
            return 0  # the server closed the connection without an answer
        finally:
            conn.close()

    def kib(self, field: str) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    def reset_peak(self) -> None:
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def lying_chunked_upload(port: int, total: int) -> tuple[str, int]:
    """Stream ``total`` bytes of a file part, chunked, under ``Content-Length: 100``; stop
    sending once the server answers. The status line (or how it ended) and the bytes sent."""
    head = (f"POST /api/search/image HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n"
            f"Transfer-Encoding: chunked\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n").encode()
    part = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="a.png"\r\nContent-Type: image/png\r\n\r\n').encode()
    block = b"\0" * MiB
    sent, answer = 0, b""
    with socket.create_connection(("127.0.0.1", port), timeout=600) as s:
        try:
            s.sendall(head + b"%x\r\n%s\r\n" % (len(part), part))
            while sent < total and not select.select([s], [], [], 0)[0]:
                s.sendall(b"%x\r\n%s\r\n" % (len(block), block))
                sent += len(block)
            if sent >= total:
                tail = f"\r\n--{BOUNDARY}--\r\n".encode()
                s.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(tail), tail))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed while the body was still coming
        with contextlib.suppress(ConnectionResetError):
            answer = s.recv(4096)  # an answer that arrived before the reset is still readable
    return answer.split(b"\r\n")[0].decode() or "closed without an answer", sent


def poll_info(server: Server, stop: threading.Event, worst: list[float]) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        server.get("/api/info")
        worst[0] = max(worst[0], time.perf_counter() - start)
        stop.wait(0.05)


def measure(root: Path, name: str, attack: Callable[[Server], str]) -> str:
    server = Server(root)
    try:
        _, hits = server.get("/api/search?q=a%20photo&k=1")
        uid = hits.split(b'"uid":"')[1].split(b'"')[0].decode()
        server.upload(bomb_png(64))
        server.get(f"/api/thumb/{uid}")
        time.sleep(1)
        idle = server.kib("VmRSS")
        server.reset_peak()
        stop, worst = threading.Event(), [0.0]
        poller = threading.Thread(target=poll_info, args=(server, stop, worst))
        poller.start()
        start = time.perf_counter()
        outcome = attack(server)
        seconds = time.perf_counter() - start
        stop.set()
        poller.join()
        after = time.perf_counter()
        info_status, _ = server.get("/api/info")
        after_ms = 1000 * (time.perf_counter() - after)
        peak = server.kib("VmHWM")
        return (f"| {name} | {outcome} | {seconds:.1f} | {idle / 1024:.0f} | "
                f"**{(peak - idle) / 1024:.0f}** | {1000 * worst[0]:.0f} | "
                f"{info_status} in {after_ms:.0f} ms |")
    finally:
        server.stop()


def concurrently(count: int, call: Callable[[], object]) -> str:
    """Statuses of ``count`` simultaneous calls, e.g. "8x200"."""
    with ThreadPoolExecutor(count) as pool:
        results = list(pool.map(lambda _: call(), range(count)))
    return " ".join(sorted({f"{results.count(r)}x{r}" for r in results}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upload-gib", type=float, default=1.0)
    args = parser.parse_args()
    root = workspace()
    uid = huge_uid(root)
    bomb, under_cap = bomb_png(7000), bomb_png(4000)

    def chunked(server: Server) -> str:
        status, sent = lying_chunked_upload(server.port, int(args.upload_gib * 2**30))
        return f"{status} after {sent / MiB:,.0f} MiB sent"

    attacks = {
        f"chunked {args.upload_gib:g} GiB upload, `Content-Length: 100`": chunked,
        f"8 concurrent 7000x7000 PNG bombs ({len(bomb) / 1000:.0f} kB)":
            lambda s: concurrently(8, lambda: s.upload(bomb)),
        f"8 concurrent 4000x4000 PNGs ({len(under_cap) / 1000:.0f} kB)":
            lambda s: concurrently(8, lambda: s.upload(under_cap)),
        "6 concurrent cold thumbnails of the 7000x7000 image":
            lambda s: concurrently(6, lambda: s.get(f"/api/thumb/{uid}")[0]),
    }
    print(f"serving {Path(pairsift.__file__).parent} on {machine()}\n\n"
          "| attack | answers | seconds | idle RSS MiB | peak above idle MiB | "
          "worst /api/info ms during | /api/info after |\n|---|---|---|---|---|---|---|")
    for name, attack in attacks.items():
        print(measure(root, name, attack), flush=True)


if __name__ == "__main__":
    main()
