"""``python -m loadgen.replay FILE...`` (``stampede replay``): deliver what a sink left in a spill file.

A Locust process that closed while its store was away (Redis or the database down past its
buffer) leaves the jobs it could not deliver in a JSONL spill file and names it in its log. This
sends them, in their order, through the sink this environment configures: to RQ workers when
STAMPEDE_REDIS_URL is set, else straight to the database. Stores ignore records they already hold,
so replaying a file twice stores nothing twice. A file is removed once all of it is delivered.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import orjson

from loadgen.sinks import make_sink
from stampede.settings import get_settings

DELIVERY_TIMEOUT_S = 300.0

log = logging.getLogger(__name__)


def replay(path: Path, timeout_s: float = DELIVERY_TIMEOUT_S) -> tuple[int, bool]:
    """Send the jobs of one spill file; returns how many there were and whether all were delivered."""
    sink = make_sink(get_settings())
    jobs = 0
    with path.open("rb") as spilled:
        for n, line in enumerate(spilled, start=1):
            try:
                entry = orjson.loads(line)
                sink.resend(entry["job"], entry["arg"])
            except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                sink.close(timeout_s)
                raise ValueError(f"{path}:{n}: not a spilled job ({exc})") from None
            jobs += 1
    return jobs, sink.close(timeout_s)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="stampede replay", description=__doc__)
    parser.add_argument("files", nargs="+", type=Path, help="spill files (stampede-spill-*.jsonl)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    failed = 0
    for path in args.files:
        try:
            jobs, delivered = replay(path)
        except (OSError, ValueError) as exc:
            print(f"stampede replay: {exc}", file=sys.stderr)
            failed += 1
            continue
        if delivered:
            path.unlink()
            print(f"{path}: {jobs} jobs delivered; file removed")
        else:
            print(f"{path}: not all of its {jobs} jobs could be delivered; file kept", file=sys.stderr)
            failed += 1
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
