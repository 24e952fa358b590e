"""Keeps the test process itself free of gevent's monkey patching.

Importing Locust patches the standard library (threads become greenlets), which would break the
tests that run servers in threads or asyncio loops, whichever test file happens to import it first
(collection imports every file up front). Locust is imported here once, unpatched; Locust
processes that tests start run patched as usual, since the variable is gone by then.
"""

import os

os.environ["LOCUST_SKIP_MONKEY_PATCH"] = "1"
import locust  # noqa: E402, F401

del os.environ["LOCUST_SKIP_MONKEY_PATCH"]
