"""A reverse proxy in front of a hub that counts requests and can throttle response bodies.

Counting is how tests prove that a second pull makes no request; throttling lets a test kill a
client in the middle of a download; `down = True` makes it refuse connections like a dead server."""

from __future__ import annotations

import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from hubtools.net import free_port

HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection",
       "content-length"}


class CountingProxy:
    def __init__(self, upstream: str):
        parts = urlsplit(upstream)
        self.upstream_host, self.upstream_port = parts.hostname, parts.port or 80
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: list[tuple[str, str]] = []
        self.bytes_per_second: float | None = None
        self.body_bytes = 0
        self.drop_after: int | None = None
        self.ranges: list[str] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._generation = 0   # bumped by reset(): a response still streaming from before it no longer counts

    # the test API -------------------------------------------------------------------------------
    def start(self) -> "CountingProxy":
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                with proxy._lock:
                    proxy.requests.append((self.command, self.path))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP | {"host", "range"}}
                asked = self.headers.get("Range")
                conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = b"" if self.command == "HEAD" else resp.read()
                    status, start = resp.status, 0
                    if asked and status == 200 and self.command == "GET":
                        with proxy._lock:
                            proxy.ranges.append(asked)
                        start = int(asked.split("=", 1)[1].split("-", 1)[0])
                        if start >= len(data):
                            self.send_response(416)
                            self.send_header("Content-Range", f"bytes */{len(data)}")
                            self.send_header("Content-Length", "0")
                            self.end_headers()
                            return
                        status = 206
                    full = len(data)
                    data = data[start:]
                    self.send_response(status)
                    if status == 206:
                        self.send_header("Content-Range", f"bytes {start}-{full - 1}/{full}")
                    for k, v in resp.getheaders():
                        if k.lower() in HOP or k.lower() == "content-range":
                            continue
                        if k.lower() == "location":
                            v = v.replace(f"{proxy.upstream_host}:{proxy.upstream_port}", f"127.0.0.1:{proxy.port}")
                        self.send_header(k, v)
                    declared = resp.getheader("Content-Length")
                    self.send_header("Content-Length", declared if self.command == "HEAD" and declared
                                     else str(len(data)))
                    self.end_headers()
                    self._send_body(data)
                finally:
                    conn.close()

            def _send_body(self, data: bytes):
                cut = None
                with proxy._lock:
                    generation = proxy._generation
                    if proxy.drop_after is not None and len(data) > proxy.drop_after:
                        cut, proxy.drop_after = proxy.drop_after, None
                if cut is not None:
                    data = data[:cut]
                rate = proxy.bytes_per_second
                step = max(1024, int(rate / 20)) if rate else len(data) or 1
                for i in range(0, len(data), step):
                    self.wfile.write(data[i:i + step])
                    self.wfile.flush()
                    with proxy._lock:
                        if proxy._generation == generation:   # a killed client's stream is not the new run's
                            proxy.body_bytes += len(data[i:i + step])
                    if rate:
                        time.sleep(step / rate)
                if cut is not None:   # a server dying midway: the connection just ends
                    self.close_connection = True
                    self.wfile.flush()
                    import socket
                    self.connection.shutdown(socket.SHUT_RDWR)

            do_GET = do_HEAD = do_POST = do_PUT = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening: later connections are refused, like a server that is down."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.ranges.clear()
            self.body_bytes = 0
            self.drop_after = None
            self._generation += 1

    def count(self) -> int:
        with self._lock:
            return len(self.requests)
