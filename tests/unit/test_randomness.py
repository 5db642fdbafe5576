"""Keys, nonces and IVs come from the kernel's CSPRNG in 4 KB draws: every byte is handed out
once, in one thread, in one process."""

from __future__ import annotations

import os
import threading

import pytest

from caremesh import randomness
from caremesh.randomness import POOL_BYTES, random_bytes


def test_each_call_gets_bytes_of_its_own() -> None:
    drawn = [random_bytes(32) for _ in range(1000)]
    assert all(len(b) == 32 for b in drawn)
    assert len(set(drawn)) == 1000
    assert len({random_bytes(12) for _ in range(1000)}) == 1000


def test_the_kernel_is_asked_once_per_pool_not_once_per_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    real = os.urandom

    def counting(n: int) -> bytes:
        calls.append(n)
        return real(n)

    monkeypatch.setattr(randomness.os, "urandom", counting)
    monkeypatch.setattr(randomness, "_POOL", randomness._Pool())
    first = [random_bytes(32) for _ in range(POOL_BYTES // 32)]
    assert calls == [POOL_BYTES]
    assert len(set(first)) == len(first)  # the pool's bytes, each handed out once
    random_bytes(32)
    assert calls == [POOL_BYTES, POOL_BYTES]
    assert len(random_bytes(POOL_BYTES)) == POOL_BYTES  # a large draw goes to the kernel
    assert calls[-1] == POOL_BYTES


def test_threads_never_share_bytes() -> None:
    results: dict[int, list[bytes]] = {}

    def draw(n: int) -> None:
        results[n] = [random_bytes(16) for _ in range(500)]

    threads = [threading.Thread(target=draw, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [b for bs in results.values() for b in bs]
    assert len(set(every)) == 2000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_repeat_its_parents_bytes() -> None:
    random_bytes(1)  # the pool is filled before the fork
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.write(write, random_bytes(32))
        os._exit(0)
    os.close(write)
    child = os.read(read, 32)
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 32
    assert child != random_bytes(32)
