"""``python -m workers [agent] ARGS``: an RQ worker on our queues, or with ``agent`` the GPU and
runtime sampling agent. ``stampede worker`` and ``stampede agent`` forward their arguments here.
"""

from __future__ import annotations

import sys

from workers import gpu, worker


def main(argv: list[str]) -> int:
    """Dispatch on the first argument; anything else is the worker's."""
    if argv[:1] == ["agent"]:
        return gpu.main(argv[1:])
    return worker.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
