"""GroupCommit: one run_batch per gathered batch, one answer per caller, failures contained."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

import pytest

from roomkey.service.group_commit import BatchNotWritten, GroupCommit


async def test_concurrent_callers_share_one_batch_and_get_their_own_result() -> None:
    seen: list[list[int]] = []

    async def run(items: Sequence[int]) -> list[int]:
        seen.append(list(items))
        await asyncio.sleep(0)
        return [i * 10 for i in items]

    group: GroupCommit[int, int] = GroupCommit(run)
    results = await asyncio.gather(*(group.submit(i) for i in range(50)))
    assert results == [i * 10 for i in range(50)]
    assert seen == [list(range(50))]
    assert (group.batches, group.items) == (1, 50)


async def test_items_arriving_during_a_write_form_the_next_batch() -> None:
    gate = asyncio.Event()
    seen: list[list[str]] = []

    async def run(items: Sequence[str]) -> list[str]:
        seen.append(list(items))
        if len(seen) == 1:
            await gate.wait()
        return [s.upper() for s in items]

    group: GroupCommit[str, str] = GroupCommit(run)
    first = asyncio.ensure_future(group.submit("a"))
    await asyncio.sleep(0.01)
    later = [asyncio.ensure_future(group.submit(s)) for s in "bcd"]
    await asyncio.sleep(0.01)
    assert seen == [["a"]]
    gate.set()
    assert await first == "A"
    assert [await f for f in later] == ["B", "C", "D"]
    assert seen == [["a"], ["b", "c", "d"]]


async def test_max_batch_bounds_each_batch() -> None:
    sizes: list[int] = []

    async def run(items: Sequence[int]) -> list[None]:
        sizes.append(len(items))
        return [None] * len(items)

    group: GroupCommit[int, None] = GroupCommit(run, max_batch=8)
    await asyncio.gather(*(group.submit(i) for i in range(20)))
    assert sizes == [8, 8, 4]


async def test_a_failed_batch_fails_only_its_callers() -> None:
    calls = 0

    async def run(items: Sequence[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("disk full")
        return list(items)

    group: GroupCommit[int, int] = GroupCommit(run, max_batch=2)
    outcomes = await asyncio.gather(*(group.submit(i) for i in range(4)), return_exceptions=True)
    assert [type(o) for o in outcomes[:2]] == [OSError, OSError]
    assert outcomes[2:] == [2, 3]


async def test_wrong_result_count_is_an_error_for_the_batch() -> None:
    async def run(items: Sequence[int]) -> list[int]:
        return []

    group: GroupCommit[int, int] = GroupCommit(run)
    with pytest.raises(RuntimeError, match="0 results for 1 items"):
        await group.submit(1)


async def test_a_caller_that_gives_up_does_not_stop_the_write() -> None:
    gate = asyncio.Event()
    written: list[int] = []

    async def run(items: Sequence[int]) -> list[None]:
        await gate.wait()
        written.extend(items)
        return [None] * len(items)

    group: GroupCommit[int, None] = GroupCommit(run)
    caller = asyncio.ensure_future(group.submit(7))
    await asyncio.sleep(0.01)
    caller.cancel()
    gate.set()
    await group.aclose()
    assert written == [7]


def test_max_batch_must_be_positive() -> None:
    async def run(items: Sequence[int]) -> list[int]:
        return list(items)

    with pytest.raises(ValueError):
        GroupCommit(run, max_batch=0)


async def test_usable_again_after_aclose() -> None:
    async def run(items: Sequence[int]) -> list[int]:
        return [i + 1 for i in items]

    group: GroupCommit[int, int] = GroupCommit(run)
    assert await group.submit(1) == 2
    await group.aclose()
    assert await group.submit(2) == 3
    assert group.pending == 0


async def test_a_cancelled_drain_fails_its_callers_with_batch_not_written() -> None:
    gate = asyncio.Event()

    async def run(items: Sequence[int]) -> list[int]:
        await gate.wait()
        return list(items)

    group: GroupCommit[int, int] = GroupCommit(run, max_batch=1)
    first = asyncio.ensure_future(group.submit(1))
    second = asyncio.ensure_future(group.submit(2))
    await asyncio.sleep(0.01)
    assert group._drain is not None
    group._drain.cancel()
    outcomes = await asyncio.gather(first, second, return_exceptions=True)
    assert [type(o) for o in outcomes] == [BatchNotWritten, BatchNotWritten]
    assert group.pending == 0


async def _ticks(n: int = 5) -> None:
    """Let the other tasks run a few steps (no time passes)."""
    for _ in range(n):
        await asyncio.sleep(0)


async def test_with_hold_the_batch_is_taken_once_the_hold_is_entered() -> None:
    turn = asyncio.Event()
    events: list[str] = []
    seen: list[list[int]] = []

    @contextlib.asynccontextmanager
    async def hold() -> AsyncIterator[None]:
        events.append("enter")
        await turn.wait()  # e.g. waiting for the database's write turn
        yield
        events.append("commit")

    async def run(items: Sequence[int]) -> list[int]:
        seen.append(list(items))
        return [i + 1 for i in items]

    group: GroupCommit[int, int] = GroupCommit(run, hold=hold)
    first = asyncio.ensure_future(group.submit(1))
    await _ticks()
    assert events == ["enter"]
    later = [asyncio.ensure_future(group.submit(i)) for i in (2, 3)]
    await _ticks()
    assert not first.done()
    turn.set()
    assert [await first, *[await f for f in later]] == [2, 3, 4]
    assert seen == [[1, 2, 3]]  # what queued during the wait joined the batch
    assert events == ["enter", "commit"]


async def test_with_hold_a_failure_entering_or_leaving_it_fails_the_batch() -> None:
    answered: list[int] = []
    mode = {"fail": "enter"}

    @contextlib.asynccontextmanager
    async def hold() -> AsyncIterator[None]:
        if mode["fail"] == "enter":
            raise ConnectionError("no database")
        yield
        if mode["fail"] == "leave":
            raise ConnectionError("commit failed")

    async def run(items: Sequence[int]) -> list[None]:
        answered.extend(items)
        return [None] * len(items)

    group: GroupCommit[int, None] = GroupCommit(run, hold=hold)
    results = await asyncio.gather(*(group.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    assert answered == []  # never taken: nothing was written
    mode["fail"] = "leave"
    results = await asyncio.gather(*(group.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)  # written, not committed
    assert answered == [0, 1, 2]
    mode["fail"] = ""
    assert await group.submit(9) is None  # later batches are unaffected
    assert (group.batches, group.failed_batches) == (1, 2)
