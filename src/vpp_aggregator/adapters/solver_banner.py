"""Keeps HiGHS's banner off the process's standard output.

HiGHS writes "Running HiGHS …" to stdout when a process makes its first solver, in the
constructor, before any option (`output_flag`) can be set. A command's stdout is its answer
(`replay --json /dev/stdout`, a table) and a container's is its log: the first solver is made
here, once, with stdout pointed at /dev/null, so the banner has been written before any other.
"""

from __future__ import annotations

import os
import sys
from functools import cache

import highspy


@cache
def silence() -> None:
    """Make the process's first HiGHS solver with stdout discarded; later ones print nothing."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            highspy.Highs()  # type: ignore[no-untyped-call]
    finally:
        os.dup2(saved, 1)
        os.close(saved)
