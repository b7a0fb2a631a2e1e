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
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

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
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP | {"host"}}
                conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = b"" if self.command == "HEAD" else resp.read()
                    self.send_response(resp.status)
                    for k, v in resp.getheaders():
                        if k.lower() in HOP:
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
                rate = proxy.bytes_per_second
                if not rate:
                    self.wfile.write(data)
                    return
                step = max(1024, int(rate / 20))
                for i in range(0, len(data), step):
                    self.wfile.write(data[i:i + step])
                    self.wfile.flush()
                    time.sleep(step / rate)

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

    def count(self) -> int:
        with self._lock:
            return len(self.requests)
