"""The one base of the local HTTP servers that tests and benchmarks start on 127.0.0.1
(the scripted OpenAI-compatible endpoints, the faulty one, the Hub stand-in, bench's
instant server): a quiet keep-alive handler that speaks JSON, and a server that runs in
a daemon thread for the length of a `with` block. Standard library only, so that bench
scripts can use it without the test extras."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JsonHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the clients' pools reuse connections

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def read_json(self) -> dict:
        return json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))

    def send_body(self, status: int, body: bytes | str | dict, headers: dict | None = None,
                  head: bool = False) -> None:
        """Send `body` (a dict is sent as JSON) with its length; HEAD sends headers only."""
        if isinstance(body, dict):
            body = json.dumps(body)
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", **(headers or {}),
                           "Content-Length": str(len(data))}.items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(data)


class LocalServer:
    """A threading HTTP server on 127.0.0.1 (port 0: any free one), serving in a daemon
    thread inside `with`. `url` is the OpenAI-style base URL."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], port: int = 0, backlog: int = 5):
        ThreadingHTTPServer.request_queue_size = backlog
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        self._stopped = False
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
