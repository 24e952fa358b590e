"""Server-side metrics in the names vLLM and llama.cpp export, rendered by prometheus-client.

Counters and histograms are plain numbers updated once per engine step or per request (never per token),
and turned into metric families only when ``/metrics`` is scraped.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from simulator.profiles import Flavor

if TYPE_CHECKING:
    from simulator.engine import Sequence
    from simulator.runtime import Runtime

# vLLM's own bucket bounds (vllm/v1/metrics/loggers.py), so histogram_quantile reads the same on both.
_TTFT_BUCKETS_S = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
    160.0, 640.0, 2560.0,
)  # fmt: skip
_ITL_BUCKETS_S = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
_REQUEST_BUCKETS_S = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0,
    1920.0, 7680.0,
)  # fmt: skip
_FINISH_REASONS = ("stop", "length", "abort", "error", "repetition")
"""vLLM creates a success series per reason at start, so a rate() over one that has not happened yet is 0."""


class Histogram:
    """Bucket counts with a cheap ``observe(value, count)``: one bisect however many observations."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float, count: int = 1) -> None:
        self.counts[bisect_left(self.bounds, value)] += count
        self.sum += value * count

    def family(self, name: str, doc: str, labels: list[str], values: list[str]) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, doc, labels=labels)
        cumulative: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            cumulative.append(("+Inf" if bound == float("inf") else repr(bound), running))
        family.add_metric(values, cumulative, self.sum)
        return family


class Stats:
    """Running totals of the engine's work, updated by the runtime."""

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.prompt_seconds = 0.0
        self.decode_seconds = 0.0
        self.steps = 0
        self.busy_slot_sum = 0
        self.finished: dict[str, int] = {}
        self.ttft_s = Histogram(_TTFT_BUCKETS_S)
        self.itl_s = Histogram(_ITL_BUCKETS_S)
        """Gap before each token after the first: vLLM's inter-token latency."""
        self.request_tpot_s = Histogram(_ITL_BUCKETS_S)
        """Per request: decode time over the tokens after the first."""
        self.e2e_s = Histogram(_REQUEST_BUCKETS_S)
        self.queue_s = Histogram(_REQUEST_BUCKETS_S)
        """Arrival to admission into a batch."""
        self.prefill_s = Histogram(_REQUEST_BUCKETS_S)
        """Admission to first token."""
        self.decode_s = Histogram(_REQUEST_BUCKETS_S)
        """First token to last."""
        self.inference_s = Histogram(_REQUEST_BUCKETS_S)
        """Admission to last token: prefill and decode."""

    def observe_phases(self, seq: Sequence) -> None:
        """Queue, prefill, decode and per-token time of a finished sequence, from the engine's schedule."""
        if seq.admitted_ns is None or seq.first_token_ns is None or seq.finished_ns is None:
            return
        decode_s = (seq.finished_ns - seq.first_token_ns) / 1e9
        self.queue_s.observe((seq.admitted_ns - seq.arrived_ns) / 1e9)
        self.prefill_s.observe((seq.first_token_ns - seq.admitted_ns) / 1e9)
        self.decode_s.observe(decode_s)
        self.inference_s.observe((seq.finished_ns - seq.admitted_ns) / 1e9)
        if seq.emitted > 1:
            self.request_tpot_s.observe(decode_s / (seq.emitted - 1))


class SimCollector(Collector):
    """Reads the runtime and its :class:`Stats` at scrape time and yields the flavour's metric families."""

    def __init__(self, flavor: Flavor, runtime: Runtime, model: str) -> None:
        self._flavor = flavor
        self._runtime = runtime
        # vLLM labels every series with the served model and the engine (data-parallel rank) that made it:
        # the simulator's replicas sit behind one balancer, as one engine; llama-server exports bare series.
        self._labels = ["model_name", "engine"] if flavor is Flavor.VLLM else []
        self._values = [model, "0"] if flavor is Flavor.VLLM else []

    def collect(self) -> Iterator[Metric]:
        if self._flavor is Flavor.LLAMACPP:
            yield from self._llamacpp()
        else:
            yield from self._vllm()

    def _gauge(self, name: str, doc: str, value: float) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, doc, labels=self._labels)
        family.add_metric(self._values, value)
        return family

    def _counter(self, name: str, doc: str, value: float) -> CounterMetricFamily:
        family = CounterMetricFamily(name, doc, labels=self._labels)
        family.add_metric(self._values, value)
        return family

    def _vllm(self) -> Iterator[Metric]:
        e, s = self._runtime, self._runtime.stats
        yield self._gauge("vllm:num_requests_running", "Number of requests in model execution batches.", e.num_running)
        yield self._gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", e.num_waiting)
        yield self._gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", e.kv_usage)
        yield self._counter("vllm:prompt_tokens", "Number of prefill tokens processed.", s.prompt_tokens)
        yield self._counter("vllm:generation_tokens", "Number of generation tokens processed.", s.generation_tokens)
        success = CounterMetricFamily(
            "vllm:request_success",
            "Count of successfully processed requests.",
            labels=[*self._labels, "finished_reason"],
        )
        for reason in sorted({*_FINISH_REASONS, *s.finished}):
            success.add_metric([*self._values, reason], s.finished.get(reason, 0))
        yield success
        yield self._counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.", e.preemptions)
        yield self._counter(
            "vllm:prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens.",
            e.prefix_queried_tokens,
        )
        yield self._counter(
            "vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.", e.prefix_hit_tokens
        )
        histograms = (
            ("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", s.ttft_s),
            ("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", s.itl_s),
            (
                "vllm:request_time_per_output_token_seconds",
                "Histogram of time_per_output_token_seconds per request.",
                s.request_tpot_s,
            ),
            ("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", s.e2e_s),
            ("vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.", s.queue_s),
            ("vllm:request_prefill_time_seconds", "Histogram of time spent in PREFILL phase for request.", s.prefill_s),
            ("vllm:request_decode_time_seconds", "Histogram of time spent in DECODE phase for request.", s.decode_s),
            (
                "vllm:request_inference_time_seconds",
                "Histogram of time spent in RUNNING phase for request.",
                s.inference_s,
            ),
        )
        for name, doc, histogram in histograms:
            yield histogram.family(name, doc, self._labels, self._values)

    def _llamacpp(self) -> Iterator[Metric]:
        e, s = self._runtime, self._runtime.stats
        yield self._counter("llamacpp:prompt_tokens", "Number of prompt tokens processed.", s.prompt_tokens)
        yield self._counter("llamacpp:prompt_seconds", "Prompt process time.", s.prompt_seconds)
        yield self._counter("llamacpp:tokens_predicted", "Number of generation tokens processed.", s.generation_tokens)
        yield self._counter("llamacpp:tokens_predicted_seconds", "Predict process time.", s.decode_seconds)
        yield self._counter("llamacpp:n_decode", "Total number of llama_decode() calls.", s.steps)
        busy = s.busy_slot_sum / s.steps if s.steps else 0.0
        yield self._gauge("llamacpp:n_busy_slots_per_decode", "Average number of busy slots per decode.", busy)
        prompt_rate = s.prompt_tokens / s.prompt_seconds if s.prompt_seconds else 0.0
        yield self._gauge("llamacpp:prompt_tokens_seconds", "Average prompt throughput in tokens/s.", prompt_rate)
        gen_rate = s.generation_tokens / s.decode_seconds if s.decode_seconds else 0.0
        yield self._gauge("llamacpp:predicted_tokens_seconds", "Average generation throughput in tokens/s.", gen_rate)
        yield self._gauge("llamacpp:kv_cache_usage_ratio", "KV-cache usage. 1 means 100 percent usage.", e.kv_usage)
        yield self._gauge("llamacpp:kv_cache_tokens", "KV-cache tokens.", e.kv_used_tokens)
        yield self._gauge("llamacpp:requests_processing", "Number of requests processing.", e.num_running)
        yield self._gauge("llamacpp:requests_deferred", "Number of requests deferred.", e.num_waiting)


def render(collector: SimCollector) -> bytes:
    """The Prometheus text exposition of one collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)
