"""gc_tuning: threshold set and restorable; 0 leaves CPython's defaults; config validates it."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from roomkey.service.config import ServiceConfig
from roomkey.service.gc_tuning import DEFAULT_GC_THRESHOLD, freeze_startup_objects, tune_gc


@pytest.fixture(autouse=True)
def _restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)
    gc.unfreeze()


def test_tune_gc_raises_the_first_generation_only_and_returns_the_old_values() -> None:
    gc.set_threshold(700, 10, 10)
    assert tune_gc() == (700, 10, 10)
    assert gc.get_threshold() == (DEFAULT_GC_THRESHOLD, 10, 10)


def test_zero_keeps_the_current_thresholds() -> None:
    gc.set_threshold(700, 10, 10)
    tune_gc(0)
    assert gc.get_threshold() == (700, 10, 10)


def test_freeze_moves_live_objects_out_of_collection() -> None:
    gc.unfreeze()
    freeze_startup_objects()
    assert gc.get_freeze_count() > 0


def test_config_default_and_bounds() -> None:
    assert ServiceConfig().gc_threshold == DEFAULT_GC_THRESHOLD
    assert ServiceConfig(gc_threshold=0).gc_threshold == 0
    with pytest.raises(ValidationError):
        ServiceConfig(gc_threshold=-1)
    with pytest.raises(ValidationError):
        ServiceConfig(gc_threshold="lots")
