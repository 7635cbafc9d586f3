"""HTTP benchmarks: the time handit adds to one client request on loopback, and the throughput
of a trivial ASGI app under uvicorn with and without the per-request session middleware.

Group ``http-client``: 200 keep-alive ``requests`` GETs to a loopback server, untraced,
in a session without instrumentation, and in a session with it (each round checks that 200
exchanges were recorded, or none); ``extra_info["cpu_us_per_request"]`` is the process's CPU
time per request (client and the in-process server), steadier than wall time. Group ``asgi``: three uvicorn child processes (no middleware; the
middleware; the middleware with the engine kept installed between requests, a diagnostic of
the session start/stop cost), loaded in turn each round by 4 client threads on keep-alive
connections, 2,000 requests each; medians in ``extra_info``.
"""
from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

import handit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from http_servers import Server, refused_port, server  # noqa: E402,F401 (a fixture)

N_CLIENT = 200


def _client_round(session: requests.Session, url: str) -> None:
    for _ in range(N_CLIENT):
        session.get(url).content


@pytest.mark.benchmark(group="http-client")
@pytest.mark.parametrize("mode", ["untraced", "session-uninstrumented", "session-instrumented"])
def test_client_request(benchmark: Any, server: Server, mode: str, engine: Any) -> None:
    url = server.base + "/json"
    client = requests.Session()
    client.get(url)
    recorded: list[int] = []

    cpu: list[float] = []

    def run() -> None:
        c0 = time.process_time()
        if mode == "untraced":
            _client_round(client, url)
        else:
            with handit.session("bench") as s:
                _client_round(client, url)
            recorded.append(sum(1 for e in s._extra if e["type"] == "http_response"))
        cpu.append(time.process_time() - c0)

    if mode == "session-instrumented":
        handit.instrument()
    else:
        handit.configure(instrument_http=False)  # not re-patched by the first session
        handit.uninstrument()
    benchmark.pedantic(run, rounds=10, warmup_rounds=1)
    handit.instrument()
    if mode != "untraced":
        assert set(recorded) == ({N_CLIENT} if mode == "session-instrumented" else {0})
    benchmark.extra_info["per_request_us"] = round(benchmark.stats.stats.min / N_CLIENT * 1e6, 1)
    # CPU time of the process (client and in-process server) is steadier than wall time on a shared machine
    benchmark.extra_info["cpu_us_per_request"] = round(min(cpu) / N_CLIENT * 1e6, 1)
    print(f"\n{mode}: {benchmark.extra_info['cpu_us_per_request']} us CPU per request (client + server)")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _load(port: int, threads: int = 4, per_thread: int = 500) -> int:
    ok = [0] * threads

    def worker(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port)
        for _ in range(per_thread):
            conn.request("GET", "/hello")
            r = conn.getresponse()
            if r.read() == b"ok":
                ok[k] += 1
        conn.close()

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(ok)


def _uvicorn(port: int, middleware: str) -> subprocess.Popen:
    env = dict(os.environ, BENCH_HANDIT_MIDDLEWARE=middleware,
               PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parent), str(Path(handit.__file__).resolve().parent.parent)]))
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "_asgi_app:app", "--port", str(port), "--log-level", "warning",
                             "--no-access-log"], env=env)
    for _ in range(500):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.02)
    _load(port, per_thread=50)
    return proc


@pytest.mark.benchmark(group="asgi")
def test_asgi_throughput_with_and_without_middleware(benchmark: Any) -> None:
    """Both servers run at once; each round loads one then the other, so machine noise hits both."""
    ports = {"without": refused_port(), "with": refused_port(), "warm": refused_port()}
    procs = [_uvicorn(ports["without"], "0"), _uvicorn(ports["with"], "1"), _uvicorn(ports["warm"], "warm")]
    times: dict[str, list[float]] = {"without": [], "with": [], "warm": []}
    cpu: dict[str, list[float]] = {"without": [], "with": [], "warm": []}
    pids = dict(zip(("without", "with", "warm"), (p.pid for p in procs)))
    counts: list[int] = []

    def pair() -> None:
        for name in ("without", "with", "warm"):
            t0, c0 = time.perf_counter(), _cpu_seconds(pids[name])
            counts.append(_load(ports[name]))
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(_cpu_seconds(pids[name]) - c0)

    try:
        benchmark.pedantic(pair, rounds=6, warmup_rounds=0)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
    assert set(counts) == {2000}  # every request answered "ok"
    rps = {name: round(2000 / sorted(ts)[len(ts) // 2]) for name, ts in times.items()}
    # the server's own CPU time per request is steadier than wall time on a shared machine
    cpu_us = {name: round(sorted(cs)[len(cs) // 2] / 2000 * 1e6, 1) for name, cs in cpu.items()}
    benchmark.extra_info.update({f"server_cpu_us_per_request_{name}": v for name, v in cpu_us.items()})
    print(f"\nserver CPU per request (us): {cpu_us}")
    benchmark.extra_info.update(rps_without=rps["without"], rps_with=rps["with"], rps_with_engine_kept=rps["warm"],
                                cost_percent=round(100 * (1 - rps["with"] / rps["without"]), 1),
                                cost_percent_engine_kept=round(100 * (1 - rps["warm"] / rps["without"]), 1))
    print(f"\nASGI requests/s: without middleware {rps['without']}, with {rps['with']} "
          f"(cost {benchmark.extra_info['cost_percent']}%), with the engine kept installed {rps['warm']} "
          f"(cost {benchmark.extra_info['cost_percent_engine_kept']}%)")
