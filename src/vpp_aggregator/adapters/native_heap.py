"""Keeps glibc's allocator from holding on to memory the service has already freed.

Requests run on a thread pool, and glibc gives busy threads malloc arenas of their own (up to
eight per core). Freed memory goes back to the system only from the top of each heap, so under
steady mixed load the resident size creeps up while the Python heap stays flat (RELIABILITY.md,
load run). Capping the arenas and trimming the heaps now and then returns that memory. Off glibc
(musl, macOS) both calls do nothing and say so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform
from functools import cache

log = logging.getLogger(__name__)

_M_ARENA_MAX = -8  # mallopt parameter number from glibc's malloc.h


@cache
def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None


def cap_arenas(arena_max: int) -> bool:
    """Limit malloc arenas; takes effect for arenas created after the call, so call it early."""
    libc = _glibc()
    if libc is None or arena_max <= 0:
        return False
    return bool(libc.mallopt(ctypes.c_int(_M_ARENA_MAX), ctypes.c_int(arena_max)))


def trim() -> bool:
    """Give free pages at the top and inside every arena back to the system."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.malloc_trim(ctypes.c_size_t(0)))


def configure(arena_max: int) -> None:
    if _glibc() is None:
        log.info("not on glibc: malloc arena cap and trimming are not applied")
    elif arena_max > 0 and not cap_arenas(arena_max):
        log.warning("mallopt(M_ARENA_MAX, %d) was refused", arena_max)
