"""Suite-wide setting: one torch thread for every ``rbs`` command the tests run, in-process or in a
subprocess, unless the caller set ``RBS_THREADS`` already.

The product chooses its thread count from the machine's load (``robustbench_sparse.threads``); the
tests compare numbers across runs and processes, so they fix it, as the policy before load-following
did on this 2-core machine. ``tests/test_threads.py`` tests the automatic policy itself with the
variable removed.
"""

from __future__ import annotations

import os

os.environ.setdefault("RBS_THREADS", "1")
