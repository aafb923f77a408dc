"""Keep the C allocator from holding on to the memory of large buffers.

glibc's malloc serves a large request (128 KiB and up, at first) with a mapping of
its own and unmaps it on free, but each such free raises that threshold to the
freed size (up to 32 MiB). A worker frees large buffers all the time (fetch
responses of several MiB, produce batches): after the first few, they come from
the heap instead, between the small long-lived objects of the state, and the
heap cannot shrink past them. Measured with `goldenflow bench memory` (1,000,000
events, 100,000 shoppers), the worker's RSS grew from 267 MiB after 200,000
events to 329 MiB at the end, with the Python objects alive fewer, not more;
with the threshold pinned from the environment it grew from 267 to 274 MiB, and
with the worker pinning it from 239 to 249 MiB.

Pinning the threshold (``mallopt(M_MMAP_THRESHOLD, 128 KiB)``, which also turns
off the dynamic trim threshold) keeps every large buffer in a mapping of its own.
Elsewhere (musl, macOS) this does nothing: those allocators do not raise a
threshold this way. ``MALLOC_MMAP_THRESHOLD_`` in the environment does the same.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("goldenflow.worker")

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
MMAP_THRESHOLD = 128 * 1024  # glibc's own starting value


def glibc() -> ctypes.CDLL | None:
    """The C library, if it is glibc (the one whose threshold moves)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    # musl has a mallopt that does nothing; glibc tells its version
    if getattr(libc, "gnu_get_libc_version", None) is None:
        return None
    return libc


def pin_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Pin glibc's mmap threshold; False without glibc."""
    libc = glibc()
    if libc is None:
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(M_MMAP_THRESHOLD, threshold) == 1)
    log.debug("malloc mmap threshold pinned at %d bytes: %s", threshold, ok)
    return ok
