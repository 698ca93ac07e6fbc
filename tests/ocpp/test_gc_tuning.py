"""gc_tuning.py: the heap is frozen only once connections have changed enough and settled."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from ocpp_side.gc_tuning import LongLivedObjects


@pytest.fixture
def heap() -> Iterator[LongLivedObjects]:
    tuning = LongLivedObjects(settle_s=2.0, min_change=50)
    yield tuning
    tuning.release()
    gc.unfreeze()


def test_freezes_after_a_settled_wave(heap: LongLivedObjects) -> None:
    assert not heap.observe(100, 0.0)  # a change: wait for it to settle
    assert not heap.observe(100, 1.0)  # not settled long enough
    assert heap.observe(100, 2.5)
    assert heap.frozen and gc.get_freeze_count() > 0
    assert not heap.observe(100, 10.0)  # nothing changed since


def test_small_changes_do_not_refreeze(heap: LongLivedObjects) -> None:
    heap.observe(1000, 0.0)
    assert heap.observe(1000, 3.0)
    heap.observe(1060, 4.0)  # 6 %: below 10 % of 1,000
    assert not heap.observe(1060, 10.0)
    heap.observe(1200, 11.0)
    assert heap.observe(1200, 14.0)


def test_few_connections_never_freeze(heap: LongLivedObjects) -> None:
    heap.observe(10, 0.0)
    assert not heap.observe(10, 100.0)
    assert not heap.frozen


def test_release_unfreezes(heap: LongLivedObjects) -> None:
    heap.observe(100, 0.0)
    heap.observe(100, 5.0)
    heap.release()
    assert gc.get_freeze_count() == 0 and not heap.frozen
