"""A scripted HTTP/1.1 server for client tests: each request's ``model`` picks a behaviour.

It writes raw bytes on a real socket, so tests control exactly when each chunk leaves and how a
response breaks, which no well-behaved server (our simulator included) would do on demand.
"""

from __future__ import annotations

import json
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

FIRST_CHUNK_LEAD_S = 0.5


def sse(obj: object) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def content(text: str) -> bytes:
    return sse({"choices": [{"index": 0, "delta": {"content": text}}]})


USAGE = sse({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3}})
DONE = b"data: [DONE]\n\n"


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        request_line = self.rfile.readline()
        if not request_line:
            return
        length = 0
        while (line := self.rfile.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        model = json.loads(self.rfile.read(length))["model"]
        getattr(self, f"_{model.replace('-', '_')}")()

    def _head(self, status: str = "200 OK", content_type: str = "text/event-stream") -> None:
        self.wfile.write(
            f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )

    def _send(self, *parts: bytes) -> None:
        for part in parts:
            self.wfile.write(chunk(part))
        self.wfile.flush()

    def _end(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _slow_first(self) -> None:
        self._head()
        self._send(content("a"))
        time.sleep(FIRST_CHUNK_LEAD_S)
        self._send(content("b"), content("c"), USAGE, DONE)
        self._end()

    def _server_error(self) -> None:
        body = b'{"error":"boom"}'
        self.wfile.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    def _rate_limited(self) -> None:
        body = b'{"error":"slow down"}'
        self.wfile.write(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(body), body))  # fmt: skip

    def _cut(self) -> None:
        self._head()
        self._send(content("a"))
        self.connection.shutdown(socket.SHUT_RDWR)

    def _no_done(self) -> None:
        self._head()
        self._send(content("a"), USAGE)
        self._end()

    def _interrupted(self) -> None:
        # llama-cpp-python's server stopping a stream for a newer request: [DONE] straight after a token.
        self._head()
        self._send(content("a"), DONE)
        self._end()

    def _finished_without_usage(self) -> None:
        # llama-cpp-python's normal end: the last chunk's finish_reason, then [DONE], no usage.
        self._head()
        self._send(content("a"), sse({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}), DONE)
        self._end()

    def _invalid(self) -> None:
        self._head()
        self._send(content("a"), b'data: {"choices": [\n\n')
        self._end()

    def _stall(self) -> None:
        self._head()
        self._send(content("a"))
        time.sleep(3)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@contextmanager
def stub_server() -> Iterator[str]:
    """Serve on a free loopback port; yields the base URL."""
    server = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
