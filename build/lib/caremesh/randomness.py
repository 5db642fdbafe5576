"""Random bytes for keys, nonces and IVs, drawn from the kernel a few kilobytes at a time.

`os.urandom` releases the interpreter lock around its system call. A worker's stages are
threads sharing that lock, with a long switch interval (`CAREMESH_WORKER__SWITCH_INTERVAL_MS`,
50 ms by default), so a stage thread that calls it while another stage is busy in Python code
waits for the lock to come back: measured with one busy thread and a 50 ms interval, 7.5 ms a
call on average for 32 bytes, up to the whole interval. The research stage draws a data key and
a nonce for every new patient's vault record; the pseudonymisation's `encrypt` method an IV per
value.

`random_bytes(n)` hands out consecutive slices of a buffer filled by `os.urandom` (the kernel's
CSPRNG): each byte is used once, so every result is as random as a call of its own would be.
Each thread has its own buffer (no lock), and a buffer filled before a fork is dropped in the
child, so that two processes never hand out the same bytes.
"""

from __future__ import annotations

import os
import threading
from typing import Final

POOL_BYTES: Final = 4096
"""Bytes drawn from the kernel at a time (128 data keys of 32 bytes)."""


class _Pool(threading.local):
    def __init__(self) -> None:
        self.pid = -1
        self.buffer = b""
        self.used = 0


_POOL = _Pool()


def random_bytes(n: int) -> bytes:
    """`n` cryptographically random bytes (as `os.urandom(n)`); no byte of the pool is handed
    out twice, in this thread, another thread or a forked child."""
    pool = _POOL
    if n > POOL_BYTES // 4:
        return os.urandom(n)
    pid = os.getpid()
    if pool.pid != pid or pool.used + n > len(pool.buffer):
        pool.buffer, pool.used, pool.pid = os.urandom(POOL_BYTES), 0, pid
    start = pool.used
    pool.used = start + n
    return pool.buffer[start : start + n]
