"""The locustfile: streaming chat users for Ollama's native API and the OpenAI API.

    locust -f loadgen/chat.py --host http://127.0.0.1:11434 OllamaChatUser
    locust -f loadgen/chat.py --host http://127.0.0.1:8000 OpenAIChatUser --model M

Add ``loadgen/steps.py`` (``-f loadgen/chat.py,loadgen/steps.py --steps 1,2,4``) for a stepped
sweep. Each request fires one Locust request event (so Locust's UI and CSV show it) and puts one
record into the sink: the database directly, or RQ workers when STAMPEDE_REDIS_URL is set.
"""

from __future__ import annotations

import gc
import inspect
import logging
import os
import signal
import time
from datetime import datetime, timedelta
from typing import Any, cast

import gevent
from gevent import GreenletExit
from locust import User, events, task
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import MasterRunner

from loadgen.backoff import Backoff
from loadgen.clients import APIS, ChatApi, Measurement, encode_body, send_chat
from loadgen.fleetwatch import WorkerWatch
from loadgen.options import add_chat_arguments, chat_options, ensure_run_id
from loadgen.prompts import PromptPicker
from loadgen.run import HOSTNAME, STEP_MESSAGE, RunContext, attach, context_of
from loadgen.rxstamps import StampedHTTPClient
from loadgen.sinks import make_sink
from loadgen.webui import live_view
from stampede.preflight import StoreUnavailable, check_stores, database_named
from stampede.records import Api, Outcome, RequestRecord, StepMessage, utc_now
from stampede.settings import get_settings

log = logging.getLogger(__name__)
STORE_READY_TIMEOUT_S = 10.0  # a store still not ready then (down?) is retried and reported by the sink
_SIGNAL_WATCHERS: list[Any] = []


class RequestFailed(Exception):
    """A request that did not end well, as Locust's failure statistics show it."""


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    add_chat_arguments(parser)


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    if environment.parsed_options is None:
        return  # a library user building an Environment by hand wires its own context
    ensure_run_id(chat_options(environment.parsed_options))
    settings = get_settings()
    # The context and the step message first: a Locust worker is already connected to its master,
    # which may start users and send the step while the checks below wait on the network.
    context = RunContext(environment, live_view(environment, make_sink(settings)))
    attach(environment, context)
    if environment.runner is not None:
        environment.runner.register_message(
            STEP_MESSAGE, lambda msg, **_: context.on_step(StepMessage.model_validate(msg.data))
        )
    if context.is_coordinator and environment.host:
        try:
            context.read_plan()  # a mistake in the flags is said now, in one line, before any load
        except ValueError as exc:
            log.error("%s", exc)
            context.sink.close(0, keep=False)  # nothing was sent: nothing to keep
            raise SystemExit(2) from None
    try:
        # Before any load: a store that cannot take the records is named now, not after the run. An
        # embedded process stores into the database itself (a new SQLite file gets its schema here); a
        # fleet's hands records to Redis, and checks the database too where its environment names one.
        check_stores(settings, database=settings.redis_url is None or database_named(settings))
    except StoreUnavailable as exc:
        log.error("%s", exc)
        context.sink.close(0, keep=False)  # nothing was sent: nothing to keep
        raise SystemExit(2) from None
    # The embedded sink's store child starts up meanwhile (see EmbeddedSink): let it finish before any
    # load, and before Locust's run time starts counting.
    context.sink.flush(STORE_READY_TIMEOUT_S)
    # Locust's own SIGTERM handler stops the users and quits; this one ends the sink's wait for a store
    # that fails. Kept referenced: a watcher that is collected stops watching.
    _SIGNAL_WATCHERS.append(gevent.signal_handler(signal.SIGTERM, context.sink.give_up))
    if isinstance(environment.runner, MasterRunner):
        watch = WorkerWatch(environment.runner, lambda: context.step_index, context.workers_lost)
        environment.events.test_start.add_listener(lambda **_: watch.start())
        environment.events.test_stop.add_listener(lambda **_: watch.stop())


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_: Any) -> None:
    context = context_of(environment)
    if not isinstance(environment.runner, MasterRunner):
        context.health.start()  # the processes that send requests watch themselves
        context.tally.start()
        # A full collection walks every object Locust, gevent and the imports made: 40 to 60 ms with the
        # loop stopped, longer than a decode step. Frozen, they are left out of it (CPython's gc.freeze).
        gc.collect()
        gc.freeze()
        # Locust's runner.stop() calls inspect.stack(), whose first call maps every loaded module to its
        # file (tens of ms with the loop stopped, while the last requests still stream): map them now.
        inspect.getmodule(inspect.currentframe())
    if not context.is_coordinator:
        return
    context.start_run()
    if environment.shape_class is None:
        opts = context.options
        context.enter_step(0, opts.num_users or 1, context.plan.sweep.warmup_s, opts.request_rate or None)


@events.test_stop.add_listener
def _on_test_stop(environment: Environment, **_: Any) -> None:
    context = context_of(environment)
    context.health.stop()
    context.tally.stop()  # the final counts, queued after the last records
    context.open_loop.stop()
    if context.is_coordinator:
        context.end_run()
    context.sink.drain(get_settings().exit_wait_s)
    context.forget_plan()


@events.quitting.add_listener
def _on_quitting(environment: Environment, **_: Any) -> None:
    context = context_of(environment)
    # Waits only while the store takes records; what it did not take is kept in a file, named in one
    # line with the command that delivers it (see loadgen.sinks).
    context.sink.drain(get_settings().exit_wait_s)
    context.sink.close(timeout_s=0)


class ChatUser(User):
    """A closed-loop user: sends a streaming chat request as soon as the last one ended, or, after a
    failed one, once its backoff is over (:mod:`loadgen.backoff`)."""

    abstract = True
    chat_api: ChatApi
    connection_timeout_s = 10.0
    network_timeout_s = 120.0

    def on_start(self) -> None:
        self._context: RunContext = context_of(self.environment)
        self._http: StampedHTTPClient | None = None  # before anything can fail: on_stop reads it
        self._backoff = Backoff()
        self._due_ns: int | None = None
        try:
            prompts = self._context.prompts()
            self._tokenizer = self._context.tokenizer()
        except ValueError as exc:
            log.error("%s", exc)
            raise StopUser() from exc
        self._picker = PromptPicker(prompts, seed=self._context.user_seed())
        self._headers = {"Content-Type": "application/json", "Accept": "*/*"}
        api_key = get_settings().api_key
        if api_key is not None:
            self._headers["Authorization"] = f"Bearer {api_key.get_secret_value()}"

    def wait_time(self) -> float:
        """Locust's pause between tasks, which stopping the run cuts short. Open loop: until a send is due
        and this user, free, takes it (:meth:`loadgen.arrivals.OpenLoop.next_due_ns`). Closed loop: the backoff."""
        if self._context.open_loop.rate_per_s > 0:
            self._due_ns = self._context.open_loop.next_due_ns()
            return 0.0
        return self._backoff.wait_s

    def on_stop(self) -> None:
        self._drop_connection()

    def _connection(self) -> StampedHTTPClient:
        if self._http is None:
            client = StampedHTTPClient.from_url(
                self.host or "",
                concurrency=1,
                connection_timeout=self.connection_timeout_s,
                network_timeout=self.network_timeout_s,
            )
            self._http = cast(StampedHTTPClient, client)  # from_url builds its class; typed as the base class
        return self._http

    def _drop_connection(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def _count_tokens(self, m: Measurement) -> tuple[list[int], int | None]:
        if self._tokenizer is None:
            return [], None
        # Chunks are counted one by one for per-token ITL; the total is counted on the whole text,
        # since a tokenizer may merge across chunk boundaries.
        return [self._tokenizer.count(t) for t in m.chunk_texts], self._tokenizer.count("".join(m.chunk_texts))

    @task
    def chat(self) -> None:
        context = self._context
        plan = context.plan
        due_ns, self._due_ns = self._due_ns, None
        if due_ns is None and context.open_loop.rate_per_s > 0:
            return  # open loop's first pass: the pause after it hands this user its first send
        prompt = self._picker.next()
        max_tokens = prompt.max_tokens or plan.sweep.max_tokens
        body = encode_body(self.chat_api.body(plan.target.model, prompt.messages, max_tokens, plan.sweep.ignore_eos))
        step_index, in_warmup = context.step_index, context.in_warmup()
        started_at = utc_now()
        m = Measurement()
        try:
            send_chat(self._connection(), self.chat_api, body, self._headers, context.options.request_timeout_s, m)
        except GreenletExit:
            # Locust stops a user it need not wait for by killing its greenlet, mid-request: the chunks
            # that came still count in their window's token throughput, so they are kept as a record.
            self._drop_connection()
            m.fail(Outcome.CANCELLED, "the load stopped while the request ran")
            m.end_offset_ns = max([*m.chunk_offsets_ns[-1:], time.perf_counter_ns() - m.called_ns - m.send_offset_ns])
            self._store(m, prompt.id, step_index, in_warmup, started_at, due_ns)
            raise
        if m.outcome is not Outcome.OK:
            self._drop_connection()  # the connection may be mid-stream or broken
        self._backoff.record(m.outcome, m.retry_after_s)
        self._store(m, prompt.id, step_index, in_warmup, started_at, due_ns)

    def _store(
        self, m: Measurement, prompt_id: str, step_index: int, in_warmup: bool, started_at: datetime, due_ns: int | None
    ) -> None:
        """Make ``m`` a record for the sink and, unless the load stopping cut it short, a Locust request event.

        A cancelled request is no outcome of the server's: in Locust's statistics it would count as a
        failure, and every plain ``locust -t`` run would end with failures and exit status 1.
        """
        context = self._context
        chunk_tokens, client_tokens = self._count_tokens(m)
        record = RequestRecord(
            run_id=context.run_id,
            target=context.target,
            step_index=step_index,
            in_warmup=in_warmup,
            host=HOSTNAME,
            pid=os.getpid(),  # read per record: --processes forks after this module is imported
            api=self.chat_api.api,
            model=context.plan.target.model,
            prompt_id=prompt_id,
            outcome=m.outcome,
            http_status=m.http_status,
            server_request_id=m.server_request_id,
            error=m.error,
            started_at=started_at + timedelta(microseconds=m.send_offset_ns // 1000),
            chunk_offsets_ns=m.chunk_offsets_ns,
            late_chunks=m.late_chunks,
            end_offset_ns=m.end_offset_ns,
            prompt_tokens=m.prompt_tokens,
            output_tokens=m.output_tokens,
            chunk_tokens=chunk_tokens,
            client_output_tokens=client_tokens,
            server_timings_ms=m.server_timings_ms,
            send_delay_ns=0 if due_ns is None else max(0, m.called_ns + m.send_offset_ns - due_ns),
            reconnects=m.reconnects,
        )
        context.sink.add_request(record)
        context.tally.add(record)
        if m.outcome is Outcome.CANCELLED:
            return
        self.environment.events.request.fire(
            request_type="POST",
            name=self.chat_api.path,
            response_time=record.e2e_ms,
            response_length=m.response_bytes,
            exception=None if m.outcome is Outcome.OK else RequestFailed(f"{m.outcome.value}: {m.error}"),
            context={"outcome": m.outcome.value, "ttft_ms": record.ttft_ms, "output_tokens": m.output_tokens},
            url=self.chat_api.path,
        )


class OllamaChatUser(ChatUser):
    """Streams ``/api/chat`` (Ollama's native API)."""

    chat_api = APIS[Api.OLLAMA_CHAT]


class OpenAIChatUser(ChatUser):
    """Streams ``/v1/chat/completions`` (vLLM, llama.cpp, SGLang, TGI, gateways)."""

    chat_api = APIS[Api.OPENAI_CHAT]
