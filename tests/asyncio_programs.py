"""Asyncio programs traced by tests/test_asyncio.py and test_perfetto.py: each creates tasks (or hands work to threads) one way.

``main`` is always the creator; ``llm`` the task's coroutine; ``parse`` a plain call
inside it; ``blocking`` the function run on another thread. :func:`nests` checks the
slices of one exported track.
"""
from __future__ import annotations

import asyncio
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

THREADS: dict[str, int] = {}


def parse(i):
    return i * 2


async def llm(i, pause=0.0):
    await asyncio.sleep(pause)
    return parse(i)


async def failing(i):
    await asyncio.sleep(0)
    raise ValueError(f"bad {i}")


async def forever():
    await asyncio.sleep(3600)


def blocking(x):
    THREADS["blocking"] = threading.get_ident()
    return parse(x)


async def main_gather():
    return await asyncio.gather(llm(1, 0.002), llm(2, 0.001))


async def main_create_task():
    first = asyncio.create_task(llm(1), name="first")
    second = asyncio.create_task(llm(2), name="second")
    return await first + await second


async def main_task_group():  # PY311+
    async with asyncio.TaskGroup() as group:  # type: ignore[attr-defined]
        a = group.create_task(llm(1), name="a")
        b = group.create_task(llm(2), name="b")
    return a.result() + b.result()


async def main_as_completed():
    return sorted([await f for f in asyncio.as_completed([llm(1, 0.002), llm(2)])])


async def main_wait_for():
    return await asyncio.wait_for(llm(1), timeout=60)


async def main_to_thread():
    THREADS["main"] = threading.get_ident()
    return await asyncio.to_thread(blocking, 3)


async def main_run_in_executor():
    THREADS["main"] = threading.get_ident()
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(1) as pool:
        return await loop.run_in_executor(pool, blocking, 4)


async def main_cancel():
    task = asyncio.create_task(forever(), name="doomed")
    await asyncio.sleep(0)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return "cancelled"
    return "not cancelled"


async def main_exception():
    results = await asyncio.gather(failing(1), llm(2), return_exceptions=True)
    return [type(r).__name__ if isinstance(r, BaseException) else r for r in results]


async def main_factory():
    loop = asyncio.get_running_loop()
    made = []

    def factory(loop, coro, **kwargs):
        made.append(coro)
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(factory)
    value = await asyncio.create_task(llm(5), name="factory-made")
    loop.set_task_factory(None)
    return value, len(made)


async def main_eager():  # PY312+: the task runs to its first await inside create_task
    loop = asyncio.get_running_loop()
    loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
    value = await asyncio.create_task(llm(6, 0.001), name="eager")
    loop.set_task_factory(None)
    return value


PROGRAMS = {
    "gather": main_gather, "create_task": main_create_task, "as_completed": main_as_completed,
    "wait_for": main_wait_for, "to_thread": main_to_thread, "run_in_executor": main_run_in_executor,
    "cancel": main_cancel, "exception": main_exception, "factory": main_factory,
}
if sys.version_info >= (3, 11):
    PROGRAMS["task_group"] = main_task_group
if sys.version_info >= (3, 12):
    PROGRAMS["eager"] = main_eager


def run(name):
    """Run program ``name`` in a new event loop (from this traced function: the loop's host call)."""
    return asyncio.run(PROGRAMS[name]())


def nests(intervals):
    """True if no two ``(start, end)`` intervals overlap partly (each pair is disjoint or one holds the other)."""
    stack = []
    for start, end in sorted(intervals, key=lambda i: (i[0], -i[1])):
        while stack and stack[-1] <= start:
            stack.pop()
        if stack and end > stack[-1]:
            return False
        stack.append(end)
    return True
