"""``python -m loadgen.replay [FILE...]`` (``stampede replay``): deliver what a sink left behind.

A Locust process leaves two kinds of files when it could not deliver everything: a JSONL spill file
(``stampede-spill-*.jsonl``: jobs that did not fit in memory while its store was away, named in its
log) and journal segments (``stampede-journal-*.rows``: the rows it held when it was killed, see
:mod:`loadgen.journal`). This sends them, in order, through the sink this environment configures: to
RQ workers when STAMPEDE_REDIS_URL is set, else straight to the database. Without FILE arguments it
takes, from the temporary directory, the files whose writer is gone (a sink holds a lock file while
it lives). Stores ignore records they already hold, so replaying a file twice stores nothing twice.
A file is removed once all of it is delivered.

``--failed`` puts back on the queue the record jobs RQ gave up on (its failed-job registry: their
retries ran out while the store was away, before workers held jobs during an outage), for the
workers to store once the store is back.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import orjson
from redis.exceptions import RedisError

from loadgen.journal import read_segment
from loadgen.rq_sink import requeue_failed
from loadgen.sinkfiles import abandoned, is_segment, left_behind, remove_stale_locks
from loadgen.sinks import Sink, make_sink
from loadgen.storejobs import STORE_REQUESTS
from stampede.rows import row_batch
from stampede.settings import get_settings

log = logging.getLogger(__name__)


def _resend_spill(sink: Sink, path: Path) -> int:
    jobs = 0
    with path.open("rb") as spilled:
        for n, line in enumerate(spilled, start=1):
            try:
                entry = orjson.loads(line)
                sink.resend(entry["job"], entry["arg"])
            except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{n}: not a spilled job ({exc})") from None
            jobs += 1
    return jobs


def _resend_segment(sink: Sink, path: Path) -> int:
    columns, rows = read_segment(path)
    batches = [rows[i : i + sink.batch_size] for i in range(0, len(rows), sink.batch_size)]
    for batch in batches:
        sink.resend(STORE_REQUESTS, row_batch(batch, columns))
    return len(batches)


def replay(path: Path) -> tuple[int, bool]:
    """Send the jobs of one spill file or journal segment; returns how many there were and whether
    all were delivered. It waits while the store takes them, and gives up once it has taken none for
    STAMPEDE_EXIT_WAIT_S; the file itself is the copy kept then."""
    settings = get_settings()
    sink = make_sink(settings)
    try:
        jobs = _resend_segment(sink, path) if is_segment(path) else _resend_spill(sink, path)
    except ValueError:
        sink.close(timeout_s=0, keep=False)
        raise
    delivered = sink.drain(settings.exit_wait_s)
    sink.close(timeout_s=0, keep=False)
    return jobs, delivered


def orphans(directory: Path) -> list[Path]:
    """Spill files and journal segments in ``directory`` whose writer is gone, oldest first."""
    return sorted((p for p in left_behind(directory) if abandoned(p)), key=lambda p: p.stat().st_mtime)


def _requeue_failed() -> int:
    settings = get_settings()
    if settings.redis_url is None:
        print("stampede replay --failed: STAMPEDE_REDIS_URL is not set; failed jobs live in Redis", file=sys.stderr)
        return 2
    try:
        count = requeue_failed(settings.redis_url.get_secret_value(), settings.queue_name)
    except RedisError as exc:
        print(f"stampede replay --failed: Redis unreachable ({type(exc).__name__})", file=sys.stderr)
        return 2
    print(
        f"{count} failed jobs put back on queue {settings.queue_name}; the workers store them (duplicates are ignored)"
    )
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="stampede replay", description=__doc__)
    parser.add_argument(
        "files",
        nargs="*",
        type=Path,
        help="spill files (stampede-spill-*.jsonl) and journal segments (stampede-journal-*.rows); "
        "default: those whose writer is gone, in the temporary directory",
    )
    parser.add_argument(
        "--failed",
        action="store_true",
        help="instead, put the jobs RQ gave up on (its failed-job registry of STAMPEDE_QUEUE_NAME) back on "
        "the queue, for the workers to store",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.failed:
        return _requeue_failed()
    directory = Path(tempfile.gettempdir())
    files = args.files or orphans(directory)
    if not files:
        print("stampede replay: nothing left behind by a stopped process")
    failed = 0
    for path in files:
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
    for folder in {directory, *(path.parent for path in files)}:
        remove_stale_locks(folder)
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
