"""The ingress's garbage-collector settings (pipeline/ingress/heap.py)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from pipeline.ingress import heap


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_gc")
def test_settle_freezes_the_startup_heap_and_raises_the_young_threshold() -> None:
    gc.set_threshold(700, 10, 10)
    kept = [object(), {"a": [1]}]  # alive through the call: frozen, not collected
    heap.settle()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, 10, 10)
    assert kept[1] == {"a": [1]}


@pytest.mark.usefixtures("restored_gc")
def test_settle_still_collects_cycles_made_after_it() -> None:
    heap.settle()

    class Node:
        def __init__(self) -> None:
            self.me = self

    node = Node()
    ref = weakref.ref(node)
    del node
    assert ref() is not None  # a cycle: reference counting alone cannot free it
    gc.collect()
    assert ref() is None


@pytest.mark.usefixtures("restored_gc")
def test_settle_leaves_a_disabled_threshold_alone() -> None:
    gc.set_threshold(0, 10, 10)
    heap.settle()
    assert gc.get_threshold()[0] == 0


@pytest.mark.usefixtures("restored_gc")
def test_settle_keeps_a_higher_threshold() -> None:
    gc.set_threshold(heap.YOUNG_THRESHOLD * 2, 10, 10)
    heap.settle()
    assert gc.get_threshold()[0] == heap.YOUNG_THRESHOLD * 2
