"""The streaming client against a scripted server: incremental timing and every failure outcome."""

from collections.abc import Iterator

import pytest

from loadgen.clients import APIS, Measurement, encode_body, send_chat
from loadgen.rxstamps import StampedHTTPClient
from stampede.records import Api, Outcome
from tests.integration.stub_server import FIRST_CHUNK_LEAD_S, stub_server

OPENAI = APIS[Api.OPENAI_CHAT]
MESSAGES = ({"role": "user", "content": "hi"},)


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with stub_server() as url:
        yield url


def send(base_url: str, behaviour: str, network_timeout_s: float = 5.0) -> Measurement:
    http = StampedHTTPClient.from_url(base_url, concurrency=1, connection_timeout=2, network_timeout=network_timeout_s)
    try:
        body = encode_body(OPENAI.body(behaviour, MESSAGES, 16))
        return send_chat(http, OPENAI, body, {"Content-Type": "application/json"}, timeout_s=10)
    finally:
        http.close()


def test_first_chunk_is_timed_when_it_arrives_not_when_the_body_ends(base_url: str) -> None:
    m = send(base_url, "slow-first")
    assert m.outcome is Outcome.OK, m.error
    assert len(m.chunk_offsets_ns) == 3
    # The server holds the rest back for FIRST_CHUNK_LEAD_S after the first chunk: a reader that
    # waited for full buffers would stamp all three chunks together at the end.
    gap_s = (m.chunk_offsets_ns[1] - m.chunk_offsets_ns[0]) / 1e9
    assert gap_s >= FIRST_CHUNK_LEAD_S * 0.8
    assert (m.prompt_tokens, m.output_tokens) == (5, 3)


@pytest.mark.parametrize(("behaviour", "status"), [("server-error", 500), ("rate-limited", 429)])
def test_http_errors_keep_their_status_and_body(base_url: str, behaviour: str, status: int) -> None:
    m = send(base_url, behaviour)
    assert m.outcome is Outcome.HTTP_ERROR
    assert m.http_status == status
    assert m.error is not None and str(status) in m.error


@pytest.mark.parametrize(
    ("behaviour", "outcome"),
    [
        ("cut", Outcome.TRUNCATED),
        ("no-done", Outcome.TRUNCATED),
        ("invalid", Outcome.INVALID_STREAM),
        ("interrupted", Outcome.ABORTED),
    ],
)
def test_broken_streams_are_classified(base_url: str, behaviour: str, outcome: Outcome) -> None:
    m = send(base_url, behaviour)
    assert m.outcome is outcome, m.error
    assert m.http_status == 200
    assert len(m.chunk_offsets_ns) == 1  # what arrived before the break is kept


def test_a_stream_that_finished_without_usage_is_ok(base_url: str) -> None:
    m = send(base_url, "finished-without-usage")
    assert m.outcome is Outcome.OK, m.error
    assert (m.prompt_tokens, m.output_tokens) == (None, None)


def test_a_stalled_stream_times_out(base_url: str) -> None:
    m = send(base_url, "stall", network_timeout_s=0.5)
    assert m.outcome is Outcome.TIMEOUT
    assert m.end_offset_ns < 2.5e9


def test_an_unreachable_target_is_a_connection_error() -> None:
    with stub_server() as url:
        pass  # the port was just released, so nothing listens there now
    m = send(url, "slow-first")
    assert m.outcome is Outcome.CONNECTION_ERROR
    assert m.http_status is None
