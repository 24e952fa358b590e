"""``python -m simulator``: run a simulated runtime until SIGINT/SIGTERM (see :mod:`simulator.cli`)."""

from simulator.cli import main

raise SystemExit(main())
