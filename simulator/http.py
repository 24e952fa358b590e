"""A lean HTTP/1.1 server on asyncio's Protocol API: keep-alive, Content-Length bodies, chunked responses.

The simulator writes up to hundreds of thousands of chunks a second, so a response is a thin wrapper
over ``transport.write`` with no per-chunk coroutine, task or buffer copy. Handlers are plain callables
that answer now or keep the :class:`Response` and finish it later (from the engine timer loop).
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import cast
from urllib.parse import parse_qsl

import orjson

_MAX_HEAD_BYTES = 65_536
_MAX_BODY_BYTES = 64 * 1024 * 1024


@dataclass(slots=True)
class Request:
    """A parsed request; header names are lower-case."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


Handler = Callable[[Request, "Response"], None]


class Response:
    """Answers one request, at once (:meth:`send`) or as a chunked stream (:meth:`start` / :meth:`chunk`)."""

    __slots__ = ("_conn", "_keep_alive", "streaming", "done", "on_disconnect")

    def __init__(self, conn: HttpConnection, keep_alive: bool) -> None:
        self._conn = conn
        self._keep_alive = keep_alive
        self.streaming = False
        self.done = False
        self.on_disconnect: Callable[[], None] | None = None
        """Called if the client goes away before the response is complete."""

    @property
    def open(self) -> bool:
        """Whether the connection can still take bytes."""
        return self._conn.transport is not None and not self.done

    def _head(self, status: int, headers: dict[str, str]) -> bytes:
        reason = HTTPStatus(status).phrase
        lines = [f"HTTP/1.1 {status} {reason}"]
        lines.extend(f"{k}: {v}" for k, v in headers.items())
        lines.append("Connection: keep-alive" if self._keep_alive else "Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        """Write a complete response with a Content-Length."""
        all_headers = {"Content-Type": content_type, "Content-Length": str(len(body)), **(headers or {})}
        self._conn.write(self._head(status, all_headers) + body)
        self._finish()

    def send_json(self, status: int, payload: object, headers: dict[str, str] | None = None) -> None:
        self.send(status, orjson.dumps(payload), "application/json", headers)

    def start(self, status: int, content_type: str, headers: dict[str, str] | None = None) -> None:
        """Send the head of a chunked (Transfer-Encoding: chunked) response."""
        self.streaming = True
        all_headers = {"Content-Type": content_type, "Transfer-Encoding": "chunked", **(headers or {})}
        self._conn.write(self._head(status, all_headers))

    def chunk(self, data: bytes) -> None:
        """Write one chunk of a streaming response (one ``write`` call, so one socket send)."""
        transport = self._conn.transport
        if transport is not None:
            transport.write(b"%x\r\n%b\r\n" % (len(data), data))

    def end(self) -> None:
        """Close the chunked body; the connection then serves the next request."""
        self._conn.write(b"0\r\n\r\n")
        self._finish()

    def reset(self) -> None:
        """Abort the connection with a TCP RST (SO_LINGER 0), as a crashed server or proxy would."""
        transport = self._conn.transport
        self.done = True
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    def _finish(self) -> None:
        self.done = True
        self._conn.response_done(self._keep_alive)


class HttpConnection(asyncio.Protocol):
    """One client connection: parses requests one at a time and hands each to the router."""

    def __init__(self, route: Callable[[Request, Response], None]) -> None:
        self._route = route
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._active: Response | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Each token must leave at its scheduled time, not when Nagle decides.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        active, self._active = self._active, None
        if active is not None and not active.done and active.on_disconnect is not None:
            active.on_disconnect()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._active is None:
            self._parse()

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def response_done(self, keep_alive: bool) -> None:
        self._active = None
        if self.transport is None:
            return
        if not keep_alive:
            self.transport.close()
        elif self._buffer:
            self._parse()

    def _parse(self) -> None:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > _MAX_HEAD_BYTES:
                self._reject(431)
            return
        lines = self._buffer[:end].decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            self._reject(400)
            return
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._reject(411)  # every client we serve sends a Content-Length
            return
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            self._reject(400)
            return
        if length > _MAX_BODY_BYTES:
            self._reject(413)
            return
        if len(self._buffer) < end + 4 + length:
            return
        body = bytes(self._buffer[end + 4 : end + 4 + length])
        del self._buffer[: end + 4 + length]
        path, _, query = target.partition("?")
        connection = headers.get("connection", "").lower()
        keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
        response = Response(self, keep_alive)
        self._active = response
        self._route(Request(method.upper(), path, dict(parse_qsl(query)), headers, body), response)

    def _reject(self, status: int) -> None:
        Response(self, keep_alive=False).send(status, HTTPStatus(status).phrase.encode(), "text/plain")
        self._buffer.clear()
