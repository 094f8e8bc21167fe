"""Servers started for a test run end with the process that started them, even when it is killed
(a test run stopped hard left three Kafka JVMs behind, holding memory and ports)."""

from __future__ import annotations

import ctypes
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """`preexec_fn` for Popen: Linux sends SIGKILL to the child when its parent thread exits."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
