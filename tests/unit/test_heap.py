import gc
import weakref

from caremesh.heap import freeze_startup_objects


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_startup_objects_leave_the_collected_generations(unfrozen: None) -> None:
    built_at_start = {"routes": ["/fhir"]}
    assert any(o is built_at_start for o in gc.get_objects())

    freeze_startup_objects()

    assert not any(o is built_at_start for o in gc.get_objects())
    assert gc.get_freeze_count() > 0


def test_garbage_made_after_the_freeze_is_still_collected(unfrozen: None) -> None:
    freeze_startup_objects()
    a, b = _Node(), _Node()
    a.other, b.other = b, a  # a cycle: only the collector frees it
    gone = weakref.ref(a)
    del a, b

    gc.collect()

    assert gone() is None


def test_start_up_garbage_is_collected_before_freezing(unfrozen: None) -> None:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b

    freeze_startup_objects()

    assert gone() is None  # not frozen for the process's lifetime
