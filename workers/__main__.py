"""``python -m workers ARGS``: an RQ worker on our queues (``stampede worker`` forwards here)."""

from __future__ import annotations

import sys

from workers import worker

if __name__ == "__main__":
    sys.exit(worker.main(sys.argv[1:]))
