"""Programs the capture tests trace: each exercises one shape of control flow."""
from __future__ import annotations

import asyncio
import sys
import threading
from concurrent.futures import ThreadPoolExecutor


def rec(n):
    return 0 if n == 0 else rec(n - 1) + 1


def deep_recursion():
    limit = sys.getrecursionlimit()
    return rec(min(limit - 80, 900))


def _raise(depth):
    if depth == 0:
        raise KeyError(f"missing {depth}")
    return _raise(depth - 1)


def exceptions():
    try:
        _raise(3)
    except KeyError:
        pass
    try:
        try:
            _raise(1)
        finally:
            rec(2)
    except KeyError:
        return "caught"


def gen(n):
    for i in range(n):
        yield i


def gen_with_cleanup():
    try:
        yield 1
        yield 2
    finally:
        rec(1)


def generators():
    total = sum(gen(3))
    g = gen_with_cleanup()
    next(g)
    g.close()
    g2 = gen_with_cleanup()
    next(g2)
    try:
        g2.throw(ValueError("thrown"))
    except ValueError:
        pass
    abandoned = gen(5)
    next(abandoned)
    del abandoned
    return total


def delegator():
    yield from gen(2)
    return (yield from gen(1))


def yield_from():
    return list(delegator())


async def agen(n):
    for i in range(n):
        await asyncio.sleep(0)
        yield i


async def work(x):
    await asyncio.sleep(0)
    return rec(x)


async def slow():
    await asyncio.sleep(10)


async def amain():
    values = [v async for v in agen(2)]
    results = await asyncio.gather(work(1), work(2))
    task = asyncio.ensure_future(slow())
    await asyncio.sleep(0)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    return values, results


def coroutines():
    return asyncio.run(amain())


class Shape:
    def __init__(self, side):
        self.side = side

    def area(self):
        return self.side * self.side

    @classmethod
    def unit(cls):
        return cls(1)

    @staticmethod
    def describe(x):
        return f"shape {x}"


def methods():
    s = Shape.unit()

    def inner(v):
        return Shape.describe(v)

    return inner(s.area())


def threads():
    out = []
    t = threading.Thread(target=lambda: out.append(rec(3)))
    t.start()
    t.join()
    with ThreadPoolExecutor(2) as pool:
        out.extend(pool.map(rec, [1, 2]))
    return out


PROGRAMS = {
    "recursion": deep_recursion,
    "exceptions": exceptions,
    "generators": generators,
    "yield_from": yield_from,
    "coroutines": coroutines,
    "methods": methods,
    "threads": threads,
}
