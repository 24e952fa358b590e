"""Command line of ``python -m simulator``: flags override the profile file, which overrides the defaults.

Readiness: the process prints ``simulator <profile> listening on http://HOST:PORT`` once it accepts
connections, and exits cleanly on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulator.faults import FaultKind
from simulator.profiles import Flavor, Profile, build_profile, read_profile_file
from simulator.server import SimServer

DEFAULT_PORTS = {Flavor.OLLAMA: 11434, Flavor.VLLM: 8000, Flavor.LLAMACPP: 8080}

# Flags that map one-to-one onto Profile fields: (flag, field, type, help).
_PROFILE_FLAGS: tuple[tuple[str, str, type, str], ...] = (
    ("--max-running", "max_running", int, "slots / max_num_seqs / --parallel (ollama 4, vllm 256, llamacpp 4)"),
    ("--step-base-ms", "step_base_ms", float, "fixed cost of a decode step (ollama 8, vllm 12, llamacpp 10)"),
    ("--step-per-seq-ms", "step_per_seq_ms", float, "step cost per running sequence (3, 0.05, 2.5)"),
    ("--prefill-tokens-per-s", "prefill_tokens_per_s", float, "prompt processing rate (2000, 12000, 1500)"),
    ("--kv-budget-tokens", "kv_budget_tokens", int, "KV cache size in tokens (32768, 131072, 16384)"),
    ("--max-model-len", "max_model_len", int, "context length of one request (8192, 8192, 4096)"),
    ("--mean-output-tokens", "mean_output_tokens", float, "mean EOS-like output length (200)"),
    ("--replicas", "replicas", int, "independent engines behind a least-loaded balancer (1)"),
    ("--max-queue", "max_queue", int, "waiting requests before 503 (ollama 512, others unbounded)"),
    ("--load-ms", "load_ms", float, "model load time on first use (ollama 1500, others 0)"),
    ("--keep-alive-s", "keep_alive_s", float, "idle seconds before unload, <0 never (ollama 300)"),
    ("--model-size-bytes", "model_size_bytes", int, "reported model size (4920000000)"),
    ("--gpu-fraction", "gpu_fraction", float, "share of the model in VRAM; <1 shows CPU offload (1.0)"),
    ("--seed", "seed", int, "seeds output lengths and faults (0)"),
)
_FAULT_FLAGS: tuple[tuple[str, str, type, str], ...] = (
    ("--fault-after-tokens", "after_tokens", int, "tokens streamed before a mid-stream fault (3)"),
    ("--stall-s", "stall_s", float, "length of a stall fault (5)"),
    ("--retry-after-s", "retry_after_s", int, "Retry-After of a 429 fault (1)"),
)


@dataclass(frozen=True, slots=True)
class Options:
    """Everything the command line decides."""

    profile: Profile
    host: str
    port: int
    api_key: str | None
    ground_truth: Path | None
    ground_truth_limit: int
    metrics: bool


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m simulator", description=__doc__)
    parser.add_argument("--profile", choices=[f.value for f in Flavor], default=Flavor.OLLAMA.value)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, help="default: 11434 (ollama), 8000 (vllm), 8080 (llamacpp)")
    parser.add_argument("--profile-file", type=Path, help="JSON or TOML overrides of the profile")
    parser.add_argument("--model", action="append", help="served model name, repeatable (stampede-sim)")
    parser.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1 routes (vllm, llamacpp)")
    parser.add_argument("--ground-truth", type=Path, help="also append each finished request to this JSONL")
    parser.add_argument("--ground-truth-limit", type=int, default=10_000, help="records kept for /sim/requests")
    parser.add_argument(
        "--metrics", action="store_true", help="llamacpp: serve /metrics (llama-server answers 501 without it)"
    )
    parser.add_argument(
        "--no-enable-prefix-caching", dest="prefix_caching", action="store_false", default=None,
        help="vllm: prefill every prompt in full, as vLLM started with this flag does",
    )  # fmt: skip
    for flag, field_name, convert, text in _PROFILE_FLAGS:
        parser.add_argument(flag, dest=field_name, type=convert, help=text)
    for fault in FaultKind:
        flag = "--fault-" + fault.value.removeprefix("http_").replace("_", "-")
        parser.add_argument(
            flag, dest=f"rate_{fault.value}", type=float, metavar="RATE", help=f"probability of a {fault.value} fault"
        )
    for flag, field_name, convert, text in _FAULT_FLAGS:
        parser.add_argument(flag, dest=f"fault_{field_name}", type=convert, metavar="N", help=text)
    parser.add_argument("--fault-window", metavar="START:END", help="rates apply only in this window (s since start)")
    return parser


def parse_args(argv: list[str] | None = None) -> Options:
    """Parse flags and build the profile (defaults < --profile-file < flags)."""
    parser = _parser()
    args = parser.parse_args(argv)
    flavor = Flavor(args.profile)
    file_layer = read_profile_file(args.profile_file) if args.profile_file else {}
    flags: dict[str, Any] = {
        field_name: getattr(args, field_name)
        for _, field_name, _, _ in _PROFILE_FLAGS
        if getattr(args, field_name) is not None
    }
    if args.model:
        flags["models"] = args.model
    if args.prefix_caching is not None:
        flags["prefix_caching"] = args.prefix_caching
    faults: dict[str, Any] = {
        name: getattr(args, f"fault_{name}")
        for _, name, _, _ in _FAULT_FLAGS
        if getattr(args, f"fault_{name}") is not None
    }
    rates = {
        k.value: getattr(args, f"rate_{k.value}") for k in FaultKind if getattr(args, f"rate_{k.value}") is not None
    }
    if rates:
        faults["rates"] = rates
    if args.fault_window:
        start, _, end = args.fault_window.partition(":")
        faults["window_start_s"] = float(start or 0)
        faults["window_end_s"] = float(end) if end else float("inf")
    if faults:
        flags["faults"] = faults
    try:
        profile = build_profile(flavor, file_layer, flags)
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))
    port = args.port if args.port is not None else DEFAULT_PORTS[flavor]
    return Options(profile, args.host, port, args.api_key, args.ground_truth, args.ground_truth_limit, args.metrics)


async def serve(options: Options) -> None:
    """Serve until SIGINT or SIGTERM."""
    server = SimServer(
        options.profile, options.api_key, options.ground_truth_limit, options.ground_truth, options.metrics
    )
    port = await server.start(options.host, options.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print(f"simulator {options.profile.flavor.value} listening on http://{options.host}:{port}", flush=True)
    await stop.wait()
    await server.stop()


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    try:
        import uvloop
    except ImportError:  # uvloop is Linux/macOS only; asyncio's loop is slower but correct
        asyncio.run(serve(options))
    else:
        uvloop.run(serve(options))
    return 0
