"""``python -m simulator`` as a process: the readiness line, ground-truth JSONL, clean exit on signals."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_process_announces_readiness_serves_and_exits_cleanly(tmp_path: Path, signum: signal.Signals) -> None:
    truth_file = tmp_path / "truth.jsonl"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulator",
            "--profile",
            "llamacpp",
            "--port",
            "0",
            "--step-base-ms",
            "1",
            "--model",
            "tiny",
            "--ground-truth",
            str(truth_file),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready = re.fullmatch(r"simulator llamacpp listening on (http://127\.0\.0\.1:\d+)\n", process.stdout.readline())
        assert ready is not None
        url = ready.group(1)
        assert httpx.get(f"{url}/health").json() == {"status": "ok"}
        body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        usage = httpx.post(f"{url}/v1/chat/completions", json=body).json()["usage"]
        process.send_signal(signum)
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
        process.wait()
    (record,) = [json.loads(line) for line in truth_file.read_text().splitlines()]
    assert record["completion_tokens"] == usage["completion_tokens"] == 4
    assert record["model"] == "tiny"
