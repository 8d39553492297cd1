"""A small HTTP server for RAUC bundles on the host's loopback, with byte counts.

RAUC streams a bundle with HTTP range requests, so the server answers
``Range: bytes=a-b`` (one range per request, which is what RAUC asks for) and
counts, per file, the requests and the body bytes it sent: the benchmark's
"bytes an adaptive install really downloaded".  It binds 127.0.0.1 only; the
guest reaches it through a QEMU ``guestfwd`` rule.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_CHUNK = 1 << 20


class BundleServer:
    """Serves the files of ``root`` on http://127.0.0.1:<port>/<name>."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.bytes_sent: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args) -> None:  # quiet
                pass

            def _file(self) -> Path | None:
                name = self.path.split("?", 1)[0].lstrip("/")
                path = (server.root / name).resolve()
                if path.parent != server.root or not path.is_file():
                    return None
                return path

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _serve(self, body: bool) -> None:
                path = self._file()
                if path is None:
                    self.send_error(HTTPStatus.NOT_FOUND)
                    return
                size = path.stat().st_size
                start, end = 0, size - 1
                status = HTTPStatus.OK
                header = self.headers.get("Range")
                if header:
                    m = _RANGE.match(header.strip())
                    if not m or (not m.group(1) and not m.group(2)):
                        self.send_error(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                        return
                    if m.group(1):
                        start = int(m.group(1))
                        end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
                    else:  # the last N bytes
                        start = max(0, size - int(m.group(2)))
                    if start > end or start >= size:
                        self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                        self.send_header("Content-Range", f"bytes */{size}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = HTTPStatus.PARTIAL_CONTENT
                length = end - start + 1
                # counted before anything is sent: once the client has the data,
                # the counters already say so
                with server._lock:
                    server.requests[path.name] += 1
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(length))
                if status == HTTPStatus.PARTIAL_CONTENT:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                self.end_headers()
                if not body:
                    return
                sent = 0
                with path.open("rb") as f:
                    f.seek(start)
                    while sent < length:
                        chunk = f.read(min(_CHUNK, length - sent))
                        if not chunk:
                            break
                        with server._lock:
                            server.bytes_sent[path.name] += len(chunk)
                        try:
                            self.wfile.write(chunk)
                        except (BrokenPipeError, ConnectionResetError):
                            with server._lock:
                                server.bytes_sent[path.name] -= len(chunk)
                            break
                        sent += len(chunk)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="bundle-server", daemon=True)

    def url(self, name: str, host: str = "127.0.0.1", port: int | None = None) -> str:
        return f"http://{host}:{port or self.port}/{name}"

    def reset(self) -> None:
        with self._lock:
            self.bytes_sent.clear()
            self.requests.clear()

    def start(self) -> BundleServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> BundleServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
