import gc
import sys
from collections.abc import Iterator

import pydantic
import pytest

from caremesh.settings import Settings
from caremesh.streams.worker import tune_interpreter


@pytest.fixture
def interpreter() -> Iterator[None]:
    """Put the switch interval and the garbage collector back as they were."""
    interval = sys.getswitchinterval()
    yield
    sys.setswitchinterval(interval)
    gc.unfreeze()


def test_worker_sets_its_switch_interval_and_freezes_startup_objects(
    interpreter: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAREMESH_WORKER__SWITCH_INTERVAL_MS", "20")
    gc.unfreeze()
    built_at_start = {"stages": ["validate"]}  # a container the collector tracks
    assert any(o is built_at_start for o in gc.get_objects())

    tune_interpreter(Settings().worker)

    assert sys.getswitchinterval() == pytest.approx(0.020)
    # frozen: out of the generations that collections walk
    assert not any(o is built_at_start for o in gc.get_objects())
    assert gc.get_freeze_count() > 0


def test_default_switch_interval_is_longer_than_the_interpreters(interpreter: None) -> None:
    tune_interpreter(Settings().worker)
    assert sys.getswitchinterval() == pytest.approx(0.050)


@pytest.mark.parametrize("value", ["0", "0.5", "5000", "fast"])
def test_switch_interval_out_of_range_is_refused(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAREMESH_WORKER__SWITCH_INTERVAL_MS", value)
    with pytest.raises(pydantic.ValidationError, match="switch_interval_ms"):
        Settings()
