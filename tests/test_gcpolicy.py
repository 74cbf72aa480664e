"""The collector policy: young garbage goes each second, frozen garbage at the full sweep."""

from __future__ import annotations

import gc
import weakref

import pytest

from clearly_exporter.gcpolicy import FreezingGc


class Node:
    """An object in a reference cycle: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


def cycle() -> weakref.ref:
    """A cycle no longer referenced, and a way to see whether it was freed."""
    return weakref.ref(Node())


@pytest.fixture
def policy():
    """The policy with automatic collections off, so only its own ones run."""
    enabled = gc.isenabled()
    gc.disable()
    yield FreezingGc(freeze_every=1.0, full_every=600.0)
    gc.unfreeze()
    gc.collect()
    if enabled:
        gc.enable()


def test_young_cyclic_garbage_goes_at_the_next_second(policy):
    policy.tick(0.0)
    young = cycle()
    policy.tick(0.5)
    assert young() is not None, "within the second: no collection"
    policy.tick(1.0)
    assert young() is None


def test_garbage_frozen_by_mistake_goes_at_the_full_sweep(policy):
    policy.tick(0.0)
    kept = Node()
    policy.tick(1.0)  # frozen while still referenced
    old = weakref.ref(kept)
    del kept
    for second in range(2, 600):
        policy.tick(float(second))
    assert old() is not None, "frozen: never scanned by the young collections"
    policy.tick(600.0)
    assert old() is None
    assert gc.get_freeze_count() > 0, "and the survivors frozen again"


def test_each_second_only_the_young_generations_are_walked(policy):
    """What reached the oldest generation is not walked again each second: hundreds of
    thousands of survivors a second in a backlog drain, 4 % of its time."""
    walked: list[int] = []

    def note(phase: str, info: dict) -> None:
        if phase == "start":
            walked.append(info["generation"])

    gc.callbacks.append(note)
    try:
        for now in (0.0, 0.5, 1.0, 2.0, 600.0):
            policy.tick(now)
    finally:
        gc.callbacks.remove(note)
    assert walked == [1, 1, 2], "young each second, everything every ten minutes"
