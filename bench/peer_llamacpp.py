"""Stampede beside a peer tool (AIPerf) on the same real server: llama.cpp's ``llama-server``.

Both tools load the same ``llama-server`` (the tiny random-weight model of
``scripts/make_tiny_gguf.py`` in the tests' size, ``-np`` slots equal to the concurrency, one
thread) with the same concurrency and the same prompts (one file, in each tool's format), each for
the same duration and output length (``ignore_eos``), one after the other, after a warm-up of each.
The server is pinned to core 0 and the load generators to core 1 (``taskset``), so neither steals
the other's CPU. It prints the output-token throughput each tool measured and their ratio.

AIPerf is installed once into its own venv in the cache directory (about 1.2 GB); llama.cpp is the
tests' cached build (``tests/realservers/llamacpp.py``). Run from the repository root:

    .venv/bin/python bench/peer_llamacpp.py [--users 4] [--duration-s 60] [--output-tokens 64] [--rate R]

AIPerf opens a new connection per request (``--connection-reuse-strategy never``), as its authors
recommend against servers that close keep-alive connections; Stampede keeps its connections. In a
closed loop that changes the load each offers (a slot waits for each new connection), so with
``--rate R`` both send the same open-loop load instead: ``R`` requests/s at constant gaps, at most
``--users`` in flight, and each measures what the server made of it.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository's packages

from stampede.report import step_summaries  # noqa: E402
from tests.realservers import llamacpp  # noqa: E402
from tests.realservers.servers import MODEL_NAME, MODEL_OPTIONS, prometheus_counters, serve_llama_server  # noqa: E402

AIPERF = "aiperf==0.13.0"
SERVER_CORE = "0"
LOADGEN_CORE = "1"
WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "many", "users", "send",
         "requests", "at", "once")  # fmt: skip


def write_prompts(directory: Path, count: int, words: int, output_tokens: int, seed: int) -> tuple[Path, Path]:
    """The same prompts for both tools: Stampede's jsonl prompt set and AIPerf's single-turn file."""
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(WORDS) for _ in range(words)) for _ in range(count)]
    ours, theirs = directory / "prompts-stampede.jsonl", directory / "prompts-aiperf.jsonl"
    ours.write_text(
        "".join(
            json.dumps({"id": f"p{i}", "messages": [{"role": "user", "content": t}], "max_tokens": output_tokens})
            + "\n"
            for i, t in enumerate(texts)
        )
    )
    theirs.write_text("".join(json.dumps({"text": t, "output_length": output_tokens}) + "\n" for t in texts))
    return ours, theirs


def run(command: list[str], **kwargs: object) -> None:
    """Run a tool; if it fails, stop saying which and with the end of its output."""
    result = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        sys.exit(f"{Path(command[3]).name} failed ({result.returncode}):\n{(result.stdout + result.stderr)[-3000:]}")


def predicted_tokens(url: str) -> float:
    """llama-server's own count of the output tokens it made so far."""
    return prometheus_counters(url)["llamacpp:tokens_predicted_total"]


def run_stampede(url: str, prompts: Path, users: int, rate: float | None, duration_s: float, workdir: Path) -> float:
    """Output tokens/s that ``stampede sweep`` measured over one step of ``users`` (in flight, at ``rate``)."""
    name = uuid.uuid4().hex[:8]
    db_url = f"sqlite:///{workdir}/stampede-{name}.db"
    run_id = uuid.uuid4()
    sweep = workdir / f"sweep-{name}.toml"
    sweep.write_text(
        f'name = "peer"\nsteps = [{users}]\nstep_duration_s = {duration_s}\nwarmup_s = 0\n'
        f'ignore_eos = true\nprompt_set = "jsonl:{prompts}"\narrival = "constant"\n'
        + (f"rates = [{rate}]\n" if rate else "")
        + f'[[targets]]\nname = "llama-server"\nurl = "{url}"\nmodel = "{MODEL_NAME}"\n'
    )
    command = ["taskset", "-c", LOADGEN_CORE, sys.executable, "-m", "stampede", "sweep", "--file", str(sweep),
               "--run-id", str(run_id)]  # fmt: skip
    env = {"STAMPEDE_DATABASE_URL": db_url, "PATH": "/usr/bin:/bin", "HOME": str(workdir)}
    run(command, env=env, cwd=workdir)
    with Session(create_engine(db_url)) as session:
        (step,) = step_summaries(session, run_id)
    return step.summary.output_tokens_per_s


def run_aiperf(
    url: str, prompts: Path, tokenizer: Path, users: int, rate: float | None, duration_s: float, workdir: Path
) -> float:
    """Output tokens/s that AIPerf measured at concurrency ``users`` (and ``rate``)."""
    python = llamacpp.cached_venv("aiperf-0.13.0", [AIPERF])
    out = workdir / f"aiperf-{uuid.uuid4().hex[:8]}"
    command = ["taskset", "-c", LOADGEN_CORE, str(python.parent / "aiperf"), "profile", "--model", MODEL_NAME,
               "--tokenizer", str(tokenizer), "--url", url, "--endpoint-type", "chat", "--streaming",
               "--concurrency", str(users), "--benchmark-duration", str(duration_s),
               "--input-file", str(prompts), "--custom-dataset-type", "single_turn",
               "--extra-inputs", "ignore_eos:true", "--use-server-token-count",
               "--connection-reuse-strategy", "never", "--ui", "none", "--artifact-dir", str(out)]  # fmt: skip
    if rate:
        command += ["--request-rate", str(rate), "--arrival-pattern", "constant"]
    run(command, cwd=workdir)
    export = json.loads((out / "profile_export_aiperf.json").read_text())
    return float(export["output_token_throughput"]["avg"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=4, help="concurrent streams, and the server's slots")
    parser.add_argument("--duration-s", type=float, default=60.0, help="measured seconds per tool")
    parser.add_argument("--warmup-s", type=float, default=10.0, help="unmeasured seconds per tool first")
    parser.add_argument("--output-tokens", type=int, default=64, help="output tokens per request (ignore_eos)")
    parser.add_argument("--prompt-words", type=int, default=32, help="words per prompt")
    parser.add_argument("--rate", type=float, help="open loop: requests/s both tools send (default: closed loop)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="peer-llamacpp-") as tmp:
        workdir = Path(tmp)
        model, tokenizer = workdir / "tiny.gguf", workdir / "tokenizer"
        script = Path(__file__).resolve().parents[1] / "scripts" / "make_tiny_gguf.py"
        make_model = [sys.executable, str(script), str(model), *MODEL_OPTIONS, "--hf-tokenizer", str(tokenizer)]
        subprocess.run(make_model, check=True, capture_output=True)
        ours, theirs = write_prompts(workdir, 64, args.prompt_words, args.output_tokens, seed=0)
        prefix = ["taskset", "-c", SERVER_CORE]
        with serve_llama_server(model, workdir / "llama-server.log", slots=args.users, prefix=prefix) as server:
            started = time.monotonic()
            run_stampede(server.url, ours, args.users, args.rate, args.warmup_s, workdir)
            run_aiperf(server.url, theirs, tokenizer, args.users, args.rate, args.warmup_s, workdir)
            made = {}
            before = predicted_tokens(server.url)
            stampede = run_stampede(server.url, ours, args.users, args.rate, args.duration_s, workdir)
            made["stampede"], before = predicted_tokens(server.url) - before, predicted_tokens(server.url)
            aiperf = run_aiperf(server.url, theirs, tokenizer, args.users, args.rate, args.duration_s, workdir)
            made["aiperf"] = predicted_tokens(server.url) - before
        load = f"{args.rate:g} requests/s, at most {args.users} in flight" if args.rate else f"{args.users} streams"
        print(f"llama-server, {load}, {args.output_tokens} output tokens, {args.duration_s:g} s each")
        # The server's count over each tool's whole run (its ramp and drain too) per second of its duration:
        # an upper bound of what the server made for that tool's load, to tell a tool's measurement from its load.
        for name, value in (("stampede", stampede), ("aiperf", aiperf)):
            server = made[name] / args.duration_s
            print(f"{name + ':':10}{value:8.1f} output tokens/s measured; server made {server:8.1f} per s of it")
        print(f"ratio:    {stampede / aiperf:8.3f}  (took {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
