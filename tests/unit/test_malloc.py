"""The worker pins glibc's mmap threshold, so large buffers freed leave the heap."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stream.app.malloc import glibc

ROOT = Path(__file__).resolve().parents[2]

# In a fresh interpreter: free a 4 MiB buffer (with glibc's dynamic threshold, this
# raises the threshold to 4 MiB), then take 2 MiB and report whether it was mapped
# on its own (mallinfo2's hblkhd: bytes in such mappings).
PROBE = """
import ctypes, sys
from stream.app.malloc import pin_mmap_threshold
if sys.argv[1] == "pin":
    assert pin_mmap_threshold()
libc = ctypes.CDLL(None)

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]

libc.mallinfo2.restype = MallInfo2
big = bytearray(4 << 20)
del big
before = libc.mallinfo2().hblkhd
buf = bytearray(2 << 20)
print(libc.mallinfo2().hblkhd - before >= 2 << 20)
"""


def probe(mode: str) -> bool:
    # glibc's own tuning variables would pin the threshold in the default run too
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=ROOT,
    )
    return out.stdout.strip() == "True"


def has_mallinfo2() -> bool:
    libc = glibc()
    return libc is not None and hasattr(libc, "mallinfo2")  # glibc 2.33 and later


@pytest.mark.skipif(not has_mallinfo2(), reason="not glibc 2.33+: no mallinfo2 to look with")
def test_a_large_buffer_is_mapped_on_its_own_after_a_larger_one_was_freed() -> None:
    assert probe("pin")  # pinned: mapped (and unmapped when freed)
    assert not probe("default")  # glibc's default: from the heap, which then keeps it
