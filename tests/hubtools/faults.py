"""Servers that misbehave, for the hub's fault tests: one that answers every request with a fixed
HTTP status (500, 503, ...), and one that accepts connections and never answers."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from hubtools.net import free_port


class StatusServer:
    """Every request is answered with `status` and a short body; `hits` counts them."""

    def __init__(self, status: int = 500):
        self.status, self.hits = status, 0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> "StatusServer":
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self):
                owner.hits += 1
                body = b"internal error\n"
                self.send_response(owner.status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = do_POST = do_PUT = _answer

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class HungServer:
    """Listens and lets the kernel accept connections, but never reads or answers: the client's
    connect succeeds and then nothing ever arrives."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.sock.close()


class FolderServer:
    """A minimal Hub-compatible file server over a folder hub: `GET /{org}/{name}/resolve/{rev}/{file}`
    with X-Repo-Commit (the folder's revision), ranges, an optional throttle, and a byte count.
    No olah needed for tests that only care about how bytes arrive."""

    def __init__(self, hub_dir, bytes_per_second: float | None = None):
        from pathlib import Path

        self.hub_dir = Path(hub_dir)
        self.bytes_per_second = bytes_per_second
        self.body_bytes = 0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> "FolderServer":
        import time
        from urllib.parse import unquote

        from zoo.hub.revision import folder_revision

        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _not_found(self):
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):
                parts = unquote(self.path.split("?")[0]).strip("/").split("/")
                if len(parts) < 5 or parts[2] != "resolve":
                    return self._not_found()
                folder = owner.hub_dir / parts[0] / parts[1]
                path = folder.joinpath(*parts[4:])
                if not path.is_file():
                    return self._not_found()
                data = path.read_bytes()
                start = 0
                asked = self.headers.get("Range")
                if asked:
                    start = int(asked.split("=", 1)[1].split("-", 1)[0])
                self.send_response(206 if asked else 200)
                if asked:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("X-Repo-Commit", folder_revision(folder))
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                rate = owner.bytes_per_second
                step = max(1024, int(rate / 20)) if rate else len(data) or 1
                for i in range(start, len(data), step):
                    piece = data[i:i + step]
                    self.wfile.write(piece)
                    self.wfile.flush()
                    owner.body_bytes += len(piece)
                    if rate:
                        time.sleep(len(piece) / rate)

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
