"""StatusBudget: persistence, rolling window, server blocks, crash safety, client wiring."""

from __future__ import annotations

import json
import stat
import threading
from pathlib import Path

import httpx
import pytest

from roomkey.loqed import (
    BoltState,
    MaybeDeliveredError,
    NotSentError,
    RateLimitedError,
    StatusBudget,
    StatusBudgetExhaustedError,
)

from .support import TS, FakeClock, Recorder, call, json_response, make_app, make_bridge

HOUR = 3600.0


def _budget(path: Path, clock: FakeClock, **kwargs: float) -> StatusBudget:
    return StatusBudget(path, clock=clock, **kwargs)  # type: ignore[arg-type]


def test_defaults_are_ten_per_twelve_hours(tmp_path: Path) -> None:
    budget = StatusBudget(tmp_path / "b.json")
    assert budget.limit == 10
    assert budget.window == 12 * HOUR


def test_reservations_persist_across_instances(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "budget.json"
    first = _budget(path, clock, limit=3)
    assert first.reserve().granted
    assert first.reserve().granted
    second = _budget(path, clock, limit=3)  # a restart
    assert second.remaining() == 1
    assert second.reserve().granted
    third = _budget(path, clock, limit=3)
    denied = third.reserve()
    assert not denied.granted
    assert not denied.blocked
    assert json.loads(path.read_text())["reads"] == [TS, TS, TS]


def test_rolling_window(tmp_path: Path, clock: FakeClock) -> None:
    budget = _budget(tmp_path / "b.json", clock, limit=2, window=12 * HOUR)
    assert budget.reserve().granted  # t=0
    clock.advance(4 * HOUR)
    assert budget.reserve().granted  # t=4h
    clock.advance(1 * HOUR)
    denied = budget.reserve()  # t=5h: both in window
    assert not denied.granted
    assert denied.retry_after == pytest.approx(7 * HOUR)
    clock.advance(7 * HOUR)  # t=12h: the first read leaves the window
    assert budget.reserve().granted
    assert not budget.reserve().granted
    assert budget.retry_after() == pytest.approx(4 * HOUR)


def test_block_is_remembered_until_it_ends(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "b.json"
    budget = _budget(path, clock, limit=10)
    until = budget.block(None)
    assert until == pytest.approx(TS + 12 * HOUR)
    restarted = _budget(path, clock, limit=10)
    assert restarted.remaining() == 0
    denied = restarted.reserve()
    assert denied.blocked
    assert not denied.granted
    assert denied.retry_after == pytest.approx(12 * HOUR)
    clock.advance(12 * HOUR)
    assert restarted.blocked_until() is None
    assert restarted.reserve().granted


def test_block_with_server_wait_and_never_shortened(tmp_path: Path, clock: FakeClock) -> None:
    budget = _budget(tmp_path / "b.json", clock)
    budget.block(600)
    assert budget.blocked_until() == pytest.approx(TS + 600)
    budget.block(60)
    assert budget.blocked_until() == pytest.approx(TS + 600)


def test_release_refunds_only_granted(tmp_path: Path, clock: FakeClock) -> None:
    budget = _budget(tmp_path / "b.json", clock, limit=1)
    reservation = budget.reserve()
    assert budget.remaining() == 0
    budget.release(reservation)
    assert budget.remaining() == 1


def test_cache_persists(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "b.json"
    _budget(path, clock).store("k", {"bolt_state": "open"})
    clock.advance(5)
    cached = _budget(path, clock).cached("k")
    assert cached is not None
    assert cached.payload == {"bolt_state": "open"}
    assert cached.fetched_at == TS
    assert _budget(path, clock).cached("other") is None


def test_file_is_private_and_written_atomically(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "sub" / "b.json"
    budget = _budget(path, clock)
    budget.store("k", {"key_secret": "s"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_corrupt_file_counts_as_spent(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "b.json"
    path.write_text("{garbage")
    budget = _budget(path, clock, limit=3)
    assert not budget.reserve().granted
    clock.advance(12 * HOUR + 1)
    assert budget.reserve().granted


def test_threads_never_exceed_the_limit(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "b.json"
    granted: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        result = _budget(path, clock, limit=5).reserve().granted
        with lock:
            granted.append(result)

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert granted.count(True) == 5
    assert len(json.loads(path.read_text())["reads"]) == 5


# --------------------------------------------------------------------------- through clients

STATUS = {"bolt_state": "night_lock", "battery_percentage": 90}


async def test_client_serves_cache_when_spent(
    flavour: str, tmp_path: Path, clock: FakeClock
) -> None:
    budget = _budget(tmp_path / "b.json", clock, limit=2)
    rec = Recorder(json_response(STATUS))
    client = make_bridge(flavour, rec, status_budget=budget, clock=clock)
    live = await call(client, "status")
    assert live.cached is False
    await call(client, "status")
    clock.advance(60)
    cached = await call(client, "status")
    assert len(rec.requests) == 2
    assert cached.cached is True
    assert cached.bolt_state is BoltState.NIGHT_LOCK
    assert cached.fetched_at == TS


async def test_client_raises_exhausted_when_nothing_cached(
    flavour: str, tmp_path: Path, clock: FakeClock
) -> None:
    budget = _budget(tmp_path / "b.json", clock, limit=1)
    rec = Recorder(httpx.ReadTimeout("t"), json_response(STATUS))
    client = make_bridge(flavour, rec, status_budget=budget, clock=clock)
    with pytest.raises(MaybeDeliveredError):
        await call(client, "status")  # may have counted at LOQED: counts here too
    with pytest.raises(StatusBudgetExhaustedError) as info:
        await call(client, "status")
    assert info.value.retry_after == pytest.approx(12 * HOUR)
    assert len(rec.requests) == 1


async def test_not_sent_read_is_refunded(flavour: str, tmp_path: Path, clock: FakeClock) -> None:
    budget = _budget(tmp_path / "b.json", clock, limit=1)
    rec = Recorder(httpx.ConnectError("refused"), json_response(STATUS))
    client = make_bridge(flavour, rec, status_budget=budget, clock=clock)
    with pytest.raises(NotSentError):
        await call(client, "status")
    assert budget.remaining() == 1
    assert (await call(client, "status")).bolt_state is BoltState.NIGHT_LOCK


async def test_crash_before_response_still_counts(
    flavour: str, tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "b.json"

    class Crash(BaseException):
        """Stands for the process dying while the request is in flight."""

    def crash(request: httpx.Request) -> httpx.Response:
        raise Crash

    client = make_bridge(
        flavour, Recorder(crash), status_budget=_budget(path, clock, limit=2), clock=clock
    )
    with pytest.raises(Crash):
        await call(client, "status")
    restarted = _budget(path, clock, limit=2)
    assert restarted.remaining() == 1


async def test_server_block_is_remembered_and_cache_served(
    flavour: str, tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "b.json"
    rec = Recorder(
        json_response({"id": "Yq1gK4oeE9KWe0ByxjX2", **STATUS}),
        httpx.Response(429, headers={"retry-after": "3600"}),
    )
    client = make_app(flavour, rec, status_budget=_budget(path, clock), clock=clock)
    await call(client, "status")
    clock.advance(10)
    served = await call(client, "status")  # 429 -> block remembered, cache served
    assert served.cached is True
    assert _budget(path, clock).blocked_until() == pytest.approx(TS + 10 + 3600)
    await call(client, "status")
    assert len(rec.requests) == 2  # blocked: nothing sent
    clock.advance(3600)
    await call(client, "status")
    assert len(rec.requests) == 3


async def test_server_block_without_cache_raises_rate_limited(
    flavour: str, tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "b.json"
    rec = Recorder(httpx.Response(429))
    client = make_app(flavour, rec, status_budget=_budget(path, clock), clock=clock)
    with pytest.raises(RateLimitedError):
        await call(client, "status")
    with pytest.raises(RateLimitedError) as info:
        await call(client, "status")
    assert info.value.retry_after == pytest.approx(12 * HOUR)
    assert len(rec.requests) == 1


async def test_commands_never_touch_the_budget(
    flavour: str, tmp_path: Path, clock: FakeClock
) -> None:
    budget = _budget(tmp_path / "b.json", clock, limit=1)
    budget.block(None)
    rec = Recorder(httpx.Response(200, text="Message resent to the lock"))
    client = make_bridge(flavour, rec, status_budget=budget, clock=clock)
    for _ in range(3):
        await call(client, "open")
    assert len(rec.requests) == 3
    assert json.loads((tmp_path / "b.json").read_text())["reads"] == []


async def test_cloud_list_locks_through_budget(
    flavour: str, tmp_path: Path, clock: FakeClock
) -> None:
    from .support import make_cloud

    budget = _budget(tmp_path / "b.json", clock, limit=1)
    rec = Recorder(json_response({"data": [{"id": "L1", "key_secret": "c2VjcmV0"}]}))
    client = make_cloud(flavour, rec, status_budget=budget)
    first = await call(client, "list_locks")
    second = await call(client, "list_locks")
    assert [lock.id for lock in second] == [lock.id for lock in first] == ["L1"]
    assert len(rec.requests) == 1
