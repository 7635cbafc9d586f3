"""HTTP benchmarks: the time handit adds to one client request on loopback, and the throughput
of a trivial ASGI app under uvicorn with and without the per-request session middleware.

Group ``http-client``: 200 keep-alive ``requests`` GETs to a loopback server, untraced,
in a session without instrumentation, and in a session with it (each round checks that 200
exchanges were recorded, or none); ``extra_info["cpu_us_per_request"]`` is the process's CPU
time per request (client and the in-process server), steadier than wall time.

Group ``asgi``: four uvicorn child processes (no middleware; the middleware; the middleware
with ``background_stop=False``, each request's session drained and finished on its own
thread as before; the middleware with ``HANDIT_CAPTURE=timing``, which leaves out the
preview of the handler's ``Request`` argument; with ``BENCH_BASELINE_HANDIT=DIR``, a fifth
with the middleware of the handit checkout in DIR, built: before and after side by side),
loaded in turn each round by ``wrk`` (a second process: 1 thread, 4 keep-alive connections,
3 s; Python client threads where wrk is not installed); medians of requests/s and of the
server's CPU per request in ``extra_info``.
"""
from __future__ import annotations

import http.client
import os
import re
import shutil
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
    """Python keep-alive clients (warm-up, and the load where wrk is missing); returns the "ok" answers."""
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


WRK_SECONDS = 3


def _wrk(port: int) -> tuple[int, float]:
    """Load from a second process (wrk, 1 thread, 4 keep-alive connections): (requests answered, seconds)."""
    out = subprocess.run(["wrk", "-t1", "-c4", f"-d{WRK_SECONDS}s", f"http://127.0.0.1:{port}/hello"],
                         capture_output=True, text=True, check=True).stdout
    assert "Non-2xx" not in out and "Socket errors" not in out, out
    m = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    assert m is not None, out
    return int(m.group(1)), float(m.group(2)) / (1000 if m.group(3) == "ms" else 1)


def _uvicorn(port: int, middleware: str, capture: str = "args", home: str | None = None) -> subprocess.Popen:
    home = home or str(Path(handit.__file__).resolve().parent.parent)
    env = dict(os.environ, BENCH_HANDIT_MIDDLEWARE=middleware, HANDIT_CAPTURE=capture,
               PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parent), home]))
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
    """The servers run at once; each round loads one after the other, so machine noise hits them all.

    Load comes from wrk (a second process) when installed, else from Python client threads.
    """
    baseline = os.environ.get("BENCH_BASELINE_HANDIT")
    names: tuple[str, ...] = ("without", "with", "sync", "timing") + (("baseline",) if baseline else ())
    middleware = {"without": "0", "with": "1", "sync": "sync", "timing": "1", "baseline": "1"}
    ports = {name: refused_port() for name in names}
    procs = [_uvicorn(ports[name], middleware[name], "timing" if name == "timing" else "args",
                      baseline if name == "baseline" else None) for name in names]
    pids = dict(zip(names, (p.pid for p in procs)))
    rates: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    counts: list[int] = []
    served = {name: 0 for name in names}
    use_wrk = shutil.which("wrk") is not None

    def rounds() -> None:
        for name in names:
            c0 = _cpu_seconds(pids[name])
            if use_wrk:
                n, seconds = _wrk(ports[name])
            else:
                t0 = time.perf_counter()
                n = _load(ports[name])
                seconds = time.perf_counter() - t0
                counts.append(n)
            rates[name].append(n / seconds)
            served[name] += n
            cpu[name].append((_cpu_seconds(pids[name]) - c0) / n)

    try:
        benchmark.pedantic(rounds, rounds=5, warmup_rounds=0)
        time.sleep(0.2)  # the last sessions are finished by the servers' drain threads
        for name in names:
            if name != "without":  # every request the load made was a session, finished
                conn = http.client.HTTPConnection("127.0.0.1", ports[name])
                conn.request("GET", "/sessions")
                assert int(conn.getresponse().read()) >= served[name], name
                conn.close()
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
    assert set(counts) <= {2000}  # every request answered "ok" (Python clients)
    median = {name: sorted(v)[len(v) // 2] for name, v in rates.items()}
    rps = {name: round(v) for name, v in median.items()}
    # the server's own CPU time per request is steadier than wall time on a shared machine
    cpu_us = {name: round(sorted(cs)[len(cs) // 2] * 1e6, 1) for name, cs in cpu.items()}
    benchmark.extra_info.update({f"server_cpu_us_per_request_{name}": v for name, v in cpu_us.items()})
    benchmark.extra_info.update(load="wrk" if use_wrk else "python", rps_without=rps["without"], rps_with=rps["with"],
                                rps_with_sync_stop=rps["sync"], rps_with_timing_capture=rps["timing"],
                                cost_percent=round(100 * (1 - median["with"] / median["without"]), 1),
                                sync_cost_percent=round(100 * (1 - median["sync"] / median["without"]), 1),
                                timing_cost_percent=round(100 * (1 - median["timing"] / median["without"]), 1),
                                cpu_cost_percent=round(100 * (cpu_us["with"] / cpu_us["without"] - 1), 1))
    if baseline:
        benchmark.extra_info.update(rps_baseline=rps["baseline"], baseline_cost_percent=round(100 * (1 - median["baseline"] / median["without"]), 1))
    print(f"\nASGI ({benchmark.extra_info['load']} load) requests/s: without middleware {rps['without']}, with {rps['with']} "
          f"(cost {benchmark.extra_info['cost_percent']}%), with background_stop=False {rps['sync']} "
          f"(cost {benchmark.extra_info['sync_cost_percent']}%), with HANDIT_CAPTURE=timing {rps['timing']} "
          f"(cost {benchmark.extra_info['timing_cost_percent']}%); "
          f"server CPU per request (us): {cpu_us} (cost {benchmark.extra_info['cpu_cost_percent']}%)"
          + (f"; baseline {baseline}: {rps['baseline']} requests/s (cost {benchmark.extra_info['baseline_cost_percent']}%)" if baseline else ""))
