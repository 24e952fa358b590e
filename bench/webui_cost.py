"""What the live LLM figures cost the load: CPU per 1,000 output tokens and timing error, with the tab
in use against without the figures, alternating.

Each round runs one Locust process with its web UI (``--autostart``) at ``--streams`` users against a
fresh vLLM-like simulator (as bench/accuracy.py does) for ``--duration-s``, twice, in alternating
order: ``off``: ``--no-live-figures`` and nobody polling; ``tab``: the LLM figures on and a client
fetching what an open LLM tab fetches every 2 s (``/stats/requests`` and ``/stampede/llm.json``).
For each: user+sys CPU seconds of the Locust process per 1,000 output tokens, and the timing error
against the simulator's ground truth (bench/accuracy.py's ``compare``: TTFT less the median offset,
and every inter-chunk gap). The summary gives each figure's median over rounds and the median of the
per-round ratios tab/off; run it on a quiet machine.

    python bench/webui_cost.py --streams 200 --rounds 5 --duration-s 30
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from accuracy import LOCUSTFILE, PROMPT_SET, children_cpu_s, compare, stampede_requests, start_simulator, truth_records

from stampede.db import upgrade
from stampede.processes import free_port, stop

POLL_S = 2.0  # Locust's web UI refreshes every 2 s
MODES = ("off", "tab")


class TabPoller(threading.Thread):
    """Fetches what an open LLM tab fetches, every 2 s, until finished."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base, self.polls, self._done = base, 0, threading.Event()

    def run(self) -> None:
        while not self._done.wait(POLL_S):
            for path in ("/stats/requests", "/stampede/llm.json"):
                try:
                    with urllib.request.urlopen(self.base + path, timeout=5) as answer:
                        answer.read()
                    self.polls += 1
                except OSError:
                    pass  # the UI is not up yet, or already gone

    def finish(self) -> int:
        self._done.set()
        self.join()
        return self.polls


def run_once(mode: str, streams: int, max_tokens: int, duration_s: float, workdir: Path) -> dict[str, Any]:
    workdir.mkdir(parents=True)
    port, web_port = free_port(), free_port()
    host = f"http://127.0.0.1:{port}"
    sim = start_simulator(port, workdir / "sim.log", streams)
    try:
        db_url = f"sqlite:///{workdir}/results.db"
        upgrade(db_url)
        command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--host", host, "--autostart",
                   "--autoquit", "0", "--web-host", "127.0.0.1", "--web-port", str(web_port),
                   "-u", str(streams), "-r", str(streams), "-t", f"{duration_s:g}s", "--stop-timeout", "120s",
                   "--exit-code-on-error", "0", "--max-tokens", str(max_tokens), "--ignore-eos", *PROMPT_SET,
                   *(["--no-live-figures"] if mode == "off" else []), "OpenAIChatUser"]  # fmt: skip
        poller = TabPoller(f"http://127.0.0.1:{web_port}")
        if mode == "tab":
            poller.start()
        before = children_cpu_s()
        result = subprocess.run(command, env={**os.environ, "STAMPEDE_DATABASE_URL": db_url}, capture_output=True,
                                text=True, timeout=duration_s + 300, cwd=workdir)  # fmt: skip
        cpu_s = children_cpu_s() - before
        polls = poller.finish() if mode == "tab" else 0
        if result.returncode != 0:
            raise SystemExit(f"locust failed:\n{result.stderr[-3000:]}")
        truth = truth_records(host)
    finally:
        stop(sim)
    measured, tokens, _, late, _, _ = stampede_requests(db_url)
    errors = compare(measured[streams:], truth)  # each user's first request also opened its connection
    return {
        "mode": mode,
        "polls": polls,
        "output_tokens": tokens,
        "cpu_s_per_1k_tokens": 1000 * cpu_s / max(tokens, 1),
        "ttft_error_ms_p99": errors["ttft_error_ms"]["p99"],
        "itl_error_ms_p99": errors["itl_error_ms"]["p99"],
        "itl_share_over_1_ms": errors["itl_share_over_1_ms"],
        "late_chunks": late,
    }


FIGURES = ("cpu_s_per_1k_tokens", "ttft_error_ms_p99", "itl_error_ms_p99", "itl_share_over_1_ms")


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    by_mode = {m: [r for r in runs if r["mode"] == m] for m in MODES}
    out: dict[str, Any] = {m: {f: float(np.median([r[f] for r in rs])) for f in FIGURES} for m, rs in by_mode.items()}
    pairs = list(zip(by_mode["off"], by_mode["tab"], strict=True))
    out["ratio_tab_over_off"] = {
        f: float(np.median([t[f] / o[f] for o, t in pairs if o[f] > 0])) if any(o[f] > 0 for o, _ in pairs) else None
        for f in FIGURES
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--duration-s", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory(prefix="stampede-webui-cost-") as tmp:
        for round_index in range(args.rounds):
            # Alternate which goes first, so a drift of the machine does not favour one mode.
            for mode in MODES if round_index % 2 == 0 else reversed(MODES):
                run = run_once(
                    mode, args.streams, args.max_tokens, args.duration_s, Path(tmp) / f"{round_index}-{mode}"
                )
                print(json.dumps(run), flush=True)
                runs.append(run)
                time.sleep(1)
    summary = {"streams": args.streams, "duration_s": args.duration_s, "runs": runs, "summary": summarize(runs)}
    print(json.dumps(summary["summary"], indent=2))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
