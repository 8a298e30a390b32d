"""``AsyncMemory`` inside a running event loop (no pytest-asyncio: each test runs its own loop)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ai_memory_sdk import AsyncMemory, Memory, RunNotFoundError


def _amemory(tmp_path: Path, **options: object) -> AsyncMemory:
    options.setdefault("path", str(tmp_path / "memory.db"))
    options.setdefault("learner", "offline")
    options.setdefault("embedder", "none")
    return AsyncMemory(**options)  # type: ignore[arg-type]


def test_async_memory_inside_a_running_loop(tmp_path: Path) -> None:
    async def main() -> None:
        async with _amemory(tmp_path) as memory:
            assert memory.engine == "local" and memory.subject_id is None
            agent_id = await memory.initialize_user_memory("bob")
            assert await memory.get_memory_agent_id("bob") == agent_id
            run = await memory.add_messages(
                "bob",
                [{"role": "user", "content": "Hi my name is Bob"}, {"role": "user", "content": "I love cats"}],
                skip_vector_storage=False,
            )
            await memory.wait_for_run(run)
            assert "Name: Bob" in (await memory.get_user_memory("bob") or "")
            assert (await memory.get_user_memory("bob", prompt_formatted=True) or "").startswith("<human ")
            assert await memory.search("bob", "cats") == ["I love cats"]
            assert (await memory.get_run(run)).status == "completed"
            assert len(await memory.get_messages("bob")) == 2
            with pytest.raises(RunNotFoundError):
                await memory.wait_for_run("run-unknown")
            await memory.delete_user("bob")
            assert await memory.get_user_memory("bob") is None

    asyncio.run(main())


def test_async_bound_subject(tmp_path: Path) -> None:
    async def main() -> None:
        memory = _amemory(tmp_path, subject_id="project")
        try:
            assert memory.subject_id == "project"
            await memory.initialize_memory("spec", "Project spec", value="v1")
            run = await memory.add_messages([{"role": "user", "content": "Kickoff complete"}])
            await memory.wait_for_run(run)
            assert await memory.get_memory("spec") == "v1"
            assert [b.label for b in await memory.list_blocks()] == ["spec"]
            with pytest.raises(ValueError, match="already exists"):
                await memory.initialize_subject("project")
        finally:
            await memory.close()

    asyncio.run(main())


def test_concurrent_coroutines(tmp_path: Path) -> None:
    users = [f"user{i}" for i in range(12)]

    async def converse(memory: AsyncMemory, uid: str, n: int) -> str:
        await memory.add_messages(uid, [{"role": "user", "content": f"I live in Town{n}"}])
        return await memory.add_messages(uid, [{"role": "user", "content": f"My name is Person{n}"}])

    async def main() -> None:
        async with _amemory(tmp_path) as memory:
            last_runs = await asyncio.gather(*(converse(memory, u, i) for i, u in enumerate(users)))
            await asyncio.gather(*(memory.wait_for_run(r, timeout=30) for r in last_runs))
            values = await asyncio.gather(*(memory.get_user_memory(u) for u in users))
            for i, value in enumerate(values):
                assert value == f"Location: Town{i}\nName: Person{i}", value
            for u in users:
                assert all(r.status == "completed" for r in await memory.list_runs(u))

    asyncio.run(main())


def test_waiting_does_not_block_the_loop(tmp_path: Path) -> None:
    ticks: list[float] = []

    async def ticker(stop: asyncio.Event) -> None:
        while not stop.is_set():
            ticks.append(time.monotonic())
            await asyncio.sleep(0.02)

    async def main() -> None:
        async with _amemory(tmp_path, background=False) as memory:  # nothing processes the run
            run = await memory.add_messages("u", [{"role": "user", "content": "hello"}])
            stop = asyncio.Event()
            task = asyncio.create_task(ticker(stop))
            start = time.monotonic()
            with pytest.raises(TimeoutError):
                await memory.wait_for_run(run, timeout=1)
            stop.set()
            await task
            assert time.monotonic() - start >= 0.9
            assert (await memory.get_run(run)).status == "queued"

    asyncio.run(main())
    assert len(ticks) >= 20, f"the event loop was blocked: only {len(ticks)} ticks in one second"


def test_sync_and_async_share_one_store(tmp_path: Path, make_memory: Callable[..., Memory]) -> None:
    async def main() -> str:
        async with _amemory(tmp_path, background=False) as memory:
            return await memory.add_messages("shared", [{"role": "user", "content": "My name is Quinn"}])

    run = asyncio.run(main())
    sync = make_memory(path=str(tmp_path / "memory.db"))  # opening a store with queued runs resumes them
    sync.wait_for_run(run, timeout=10)
    assert sync.get_user_memory("shared") == "Name: Quinn"
