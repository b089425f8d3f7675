"""Real HTTP around the gateway for client tests: uvicorn in a thread, and a flaky proxy.

The proxy sits between a client and the gateway on 127.0.0.1 and can answer 502 to a request
*after* forwarding it — the gateway did the work, the client never heard — which is what a
load balancer timing out looks like to a release pipeline.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import uvicorn

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """`app` on a free local port until the block ends; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", log_config=None)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


@dataclass
class FlakyProxy:
    """Forwards to `upstream`; the first `fail_after_forwarding[(method, path)]` such requests
    are forwarded and then answered 502, as if the response had been lost."""

    upstream: str
    fail_after_forwarding: dict[tuple[str, str], int] = field(default_factory=dict)
    seen: list[tuple[str, str, str | None, int]] = field(default_factory=list)
    url: str = ""

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in HOP_BY_HOP}
        path = handler.path.split("?")[0]
        with httpx.Client(base_url=self.upstream, timeout=60) as upstream:
            response = upstream.request(
                handler.command, handler.path, content=body, headers=headers
            )
        key = (handler.command, path)
        if self.fail_after_forwarding.get(key, 0) > 0:
            self.fail_after_forwarding[key] -= 1
            status, content, out_headers = 502, b"upstream response lost", {}
        else:
            status, content = response.status_code, response.content
            out_headers = {k: v for k, v in response.headers.items() if k.lower() not in HOP_BY_HOP}
            out_headers.pop("content-encoding", None)
        self.seen.append((handler.command, path, handler.headers.get("Idempotency-Key"), status))
        handler.send_response(status)
        for name, value in out_headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(content)))
        handler.end_headers()
        handler.wfile.write(content)


@contextmanager
def flaky_proxy(
    upstream: str, fail_after_forwarding: dict[tuple[str, str], int]
) -> Iterator[FlakyProxy]:
    proxy = FlakyProxy(upstream, dict(fail_after_forwarding))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args: Any) -> None:
            pass

        do_GET = do_POST = do_PUT = do_DELETE = lambda self: proxy.handle(self)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    proxy.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="flaky-proxy", daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
