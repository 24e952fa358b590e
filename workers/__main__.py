"""``python -m workers [agent|scheduler] ARGS``: an RQ worker on our queues; with ``agent`` the GPU
and runtime sampling agent; with ``scheduler`` the scheduled-sweep enqueuer. ``stampede worker``,
``stampede agent`` and ``stampede scheduler`` forward their arguments here.
"""

from __future__ import annotations

import sys

from workers import gpu, sweeps, worker


def main(argv: list[str]) -> int:
    """Dispatch on the first argument; anything else is the worker's."""
    if argv[:1] == ["agent"]:
        return gpu.main(argv[1:])
    if argv[:1] == ["scheduler"]:
        return sweeps.main(argv[1:])
    return worker.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
