"""Kept-alive connections the server closes: a request that met one is sent again once, and counted;
no other failure is retried.

A scripted server plays each accepted connection from a list of actions, in the order connections
come, and records every request it read, so each test knows which connection carried what.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from loadgen.clients import APIS, Measurement, encode_body, send_chat
from loadgen.rxstamps import StampedHTTPClient
from stampede.records import Api, Outcome
from tests.integration.stub_server import DONE, USAGE, chunk, content

CLOSE_AFTER_S = 0.3
"""How long a closing connection stays open after its response: the next request is written meanwhile."""
MESSAGES = ({"role": "user", "content": "hi"},)


def _read_request(reader: socket.SocketIO | object) -> str | None:
    """Read one request from a buffered reader; its path, or None at EOF."""
    request_line = reader.readline()  # type: ignore[attr-defined]
    if not request_line:
        return None
    length = 0
    while (line := reader.readline()) not in (b"\r\n", b""):  # type: ignore[attr-defined]
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    reader.read(length)  # type: ignore[attr-defined]
    return request_line.split()[1].decode()


def _stream(path: str) -> list[bytes]:
    if path == "/api/chat":  # Ollama's NDJSON
        lines = [{"message": {"content": "a"}, "done": False}, {"done": True, "eval_count": 1, "prompt_eval_count": 5}]
        return [json.dumps(obj).encode() + b"\n" for obj in lines]
    return [content("a"), USAGE, DONE]


class ScriptedServer:
    """Connection ``i`` plays ``scripts[i]``; ``requests`` lists ``(connection, path)`` of every request read.

    Actions: ``serve`` (read a request, stream a whole answer, keep the connection), ``serve-close``
    (the same marked ``Connection: close``), ``close`` (wait, then close without reading what came
    meanwhile, as a server closing a kept-alive connection does), ``drop`` (read a request, close
    without answering), ``cut`` (read a request, send the headers and one chunk, close), ``reset``
    (read a request, send part of a status line and headers, then reset the connection).
    """

    def __init__(self, scripts: list[list[str]]) -> None:
        self.scripts = scripts
        self.requests: list[tuple[int, str]] = []
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def serve(self) -> None:
        for index, script in enumerate(self.scripts):
            conn, _ = self._listener.accept()
            self.connections += 1
            with conn, conn.makefile("rb") as reader:
                for action in script:
                    if action == "close":
                        time.sleep(CLOSE_AFTER_S)
                        break
                    path = _read_request(reader)
                    if path is None:
                        break
                    self.requests.append((index, path))
                    if action == "drop":
                        break
                    if action == "reset":
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Ty")
                        time.sleep(0.05)  # the partial head reaches the client before the reset does
                        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        break
                    self._answer(conn, path, action)
                    if action == "cut":
                        break

    def _answer(self, conn: socket.socket, path: str, action: str) -> None:
        kind = "application/x-ndjson" if path == "/api/chat" else "text/event-stream"
        close = "Connection: close\r\n" if action == "serve-close" else "Keep-Alive: timeout=5, max=100\r\n"
        conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nTransfer-Encoding: chunked\r\n{close}\r\n".encode())
        parts = _stream(path)
        if action == "cut":
            conn.sendall(chunk(parts[0]))
            return
        conn.sendall(b"".join(chunk(p) for p in parts) + b"0\r\n\r\n")


@contextmanager
def scripted(*scripts: list[str]) -> Iterator[ScriptedServer]:
    server = ScriptedServer(list(scripts))
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server._listener.close()
        thread.join(timeout=5)


def send_twice(server: ScriptedServer, api: Api = Api.OPENAI_CHAT) -> tuple[Measurement, Measurement]:
    """Two requests in a row on one client, as a closed-loop user sends them."""
    chat = APIS[api]
    http = StampedHTTPClient.from_url(server.url, concurrency=1, connection_timeout=2, network_timeout=5)
    body = encode_body(chat.body("m", MESSAGES, 4))
    try:
        first = send_chat(http, chat, body, {"Content-Type": "application/json"}, timeout_s=10)
        second = send_chat(http, chat, body, {"Content-Type": "application/json"}, timeout_s=10)
    finally:
        http.close()
    return first, second


@pytest.mark.parametrize("api", [Api.OPENAI_CHAT, Api.OLLAMA_CHAT])
def test_a_request_on_a_connection_the_server_closed_is_sent_again_once_and_counted(api: Api) -> None:
    with scripted(["serve", "close"], ["serve"]) as server:
        first, second = send_twice(server, api)
    assert (first.outcome, first.reconnects) == (Outcome.OK, 0), first.error
    assert (second.outcome, second.reconnects) == (Outcome.OK, 1), second.error
    assert second.chunk_texts == ["a"]
    # The closed connection never read the second request: the server saw each request once.
    assert server.requests == [(0, APIS[api].path), (1, APIS[api].path)]
    # Timed from the resend, not from the first write, which waited CLOSE_AFTER_S for the close.
    assert second.chunk_offsets_ns[0] < CLOSE_AFTER_S * 1e9 / 2
    assert second.send_offset_ns >= CLOSE_AFTER_S * 1e9 * 0.8


def test_a_new_connection_closed_without_an_answer_is_an_error_not_retried() -> None:
    with scripted(["drop"]) as server:
        http = StampedHTTPClient.from_url(server.url, concurrency=1, connection_timeout=2, network_timeout=5)
        chat = APIS[Api.OPENAI_CHAT]
        try:
            m = send_chat(http, chat, encode_body(chat.body("m", MESSAGES, 4)), {}, timeout_s=10)
        finally:
            http.close()
    assert (m.outcome, m.reconnects) == (Outcome.CONNECTION_ERROR, 0)
    assert server.connections == 1 and len(server.requests) == 1


def test_a_resend_that_fails_too_is_the_servers_error_and_is_not_sent_a_third_time() -> None:
    with scripted(["serve", "close"], ["drop"], ["serve"]) as server:
        _, second = send_twice(server)
    assert (second.outcome, second.reconnects) == (Outcome.CONNECTION_ERROR, 1)
    assert server.requests == [(0, "/v1/chat/completions"), (1, "/v1/chat/completions")]


def test_a_reused_connection_cut_after_answer_bytes_is_truncated_not_retried() -> None:
    with scripted(["serve", "cut"]) as server:
        _, second = send_twice(server)
    assert (second.outcome, second.reconnects) == (Outcome.TRUNCATED, 0)
    assert second.chunk_texts == ["a"]
    assert server.connections == 1


def test_a_response_marked_connection_close_is_not_reused() -> None:
    with scripted(["serve-close", "close"], ["serve"]) as server:
        first, second = send_twice(server)
    assert (first.outcome, second.outcome) == (Outcome.OK, Outcome.OK)
    # The client opened a new connection itself: no request met the closing one.
    assert second.reconnects == 0
    assert server.requests == [(0, "/v1/chat/completions"), (1, "/v1/chat/completions")]


def test_a_reused_connection_reset_after_part_of_a_head_is_not_retried() -> None:
    """A reset with response bytes already read is the server's failure, though no head was complete."""
    with scripted(["serve", "reset"], ["serve"]) as server:
        _, second = send_twice(server)
    assert second.outcome is not Outcome.OK and second.reconnects == 0, second.error
    assert server.connections == 1
