"""A local HTTP server on 127.0.0.1 that records callbacks and fails the first few on purpose."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes


@dataclass
class CallbackServer:
    fail_first: int = 0
    redirect_to: str | None = None
    deliveries: list[Delivery] = field(default_factory=list)
    attempts: int = 0
    received: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                recorder.attempts += 1
                if recorder.redirect_to is not None:
                    self.send_response(307)
                    self.send_header("Location", recorder.redirect_to)
                    self.end_headers()
                    return
                if recorder.attempts <= recorder.fail_first:
                    self.send_response(503)
                    self.end_headers()
                    return
                recorder.deliveries.append(Delivery(dict(self.headers.items()), body))
                recorder.received.set()
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/hooks/trustdiff"

    def __enter__(self) -> CallbackServer:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
