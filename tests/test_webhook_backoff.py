"""HTTP exporter's retry schedule against the loopback server: backoff, its cap, jitter, 408,
the probe after an outage, and stale spool claims taken over (docs/exporters.md).

Checked by counts (requests the server saw, delays the sender chose, files left), never by
how long anything took.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from ingest_server import Answer, IngestServer
from test_webhook import assert_exactly_once, make_events, make_exporter, server, spool, spool_files, wait_until  # noqa: F401

from handit.exporters.spool import Spool, gzip_body
from handit.exporters.webhook import HanditExportWarning

pytestmark = pytest.mark.filterwarnings("ignore::handit.exporters.webhook.HanditExportWarning")


def spy_delays(exporter: Any) -> list[tuple[int, float]]:
    """Record every retry delay the sender computes (the real computation, called through)."""
    chosen: list[tuple[int, float]] = []
    real = exporter._delay

    def delay(attempt: int) -> float:
        value = real(attempt)
        chosen.append((attempt, value))
        return value

    exporter._delay = delay
    return chosen


def test_backoff_doubles_up_to_its_cap(server: IngestServer, make_exporter: Any) -> None:
    """Retry n waits backoff_base * 2**n, capped at backoff_max, times a jitter factor in [0.5, 1]."""
    server.script(*[Answer(500)] * 5)
    base, cap = 0.004, 0.02
    exporter = make_exporter(server.url, max_retries=5, backoff_base=base, backoff_max=cap)
    chosen = spy_delays(exporter)
    exporter.write_events(make_events(0, 10))
    exporter.flush(10)
    assert_exactly_once(server.events, range(10))
    assert [r.status for r in server.requests] == [500] * 5 + [200]
    assert len({r.batch_id for r in server.requests}) == 1
    assert exporter.stats["retries"] == 5
    assert [attempt for attempt, _ in chosen] == [0, 1, 2, 3, 4]
    for attempt, value in chosen:
        nominal = min(cap, base * 2**attempt)  # 0.004, 0.008, 0.016, then the cap twice
        assert 0.5 * nominal <= value <= nominal, (attempt, value)


def test_backoff_is_waited_for(server: IngestServer, make_exporter: Any) -> None:
    """A retry waits its delay: with a 30 s backoff a 0.5 s flush sees one request, and the batch
    it takes from the waiting sender is spooled, not lost."""
    server.script(Answer(503))
    exporter = make_exporter(server.url, max_retries=5, backoff_base=30.0, backoff_max=30.0)
    exporter.write_events(make_events(0, 10))
    exporter.flush(0.5)
    assert len(server.requests) == 1
    assert exporter.stats["spooled_events"] == 10 and exporter.stats["retries"] == 1


def test_jitter_spreads_the_delays(make_exporter: Any, server: IngestServer) -> None:
    """Each delay is the capped backoff times a fresh factor in [0.5, 1]: exporters retrying at
    once do not retry in step (with no jitter every value would be the same)."""
    exporter = make_exporter(server.url, backoff_base=0.5, backoff_max=30.0)
    values = [exporter._delay(2) for _ in range(400)]
    assert all(1.0 <= v <= 2.0 for v in values)
    assert len(set(values)) > 300
    assert sum(v < 1.5 for v in values) > 100 and sum(v >= 1.5 for v in values) > 100  # both halves drawn
    assert max(exporter._delay(60) for _ in range(50)) <= 30.0  # a large attempt stays at the cap


def test_a_computed_delay_is_capped(server: IngestServer, make_exporter: Any) -> None:
    """backoff_base larger than backoff_max: the cap decides, so the retry comes within the flush."""
    server.script(Answer(500))
    exporter = make_exporter(server.url, max_retries=2, backoff_base=3600.0, backoff_max=0.05)
    exporter.write_events(make_events(0, 5))
    exporter.flush(10)
    assert_exactly_once(server.events, range(5))
    assert [r.status for r in server.requests] == [500, 200]


def test_408_is_retried_not_rejected(server: IngestServer, make_exporter: Any) -> None:
    server.script(Answer(408), Answer(408))
    exporter = make_exporter(server.url, max_retries=3)
    exporter.write_events(make_events(0, 8))
    exporter.flush(10)
    assert_exactly_once(server.events, range(8))
    assert [r.status for r in server.requests] == [408, 408, 200]
    assert len({r.batch_id for r in server.requests}) == 1
    assert exporter.stats["retries"] == 2 and exporter.stats["rejected"] == 0


def test_an_outage_is_probed_by_one_request(server: IngestServer, make_exporter: Any, spool: Path) -> None:
    """After a batch had to be spooled, new batches go to the spool without a request until
    backoff_max has passed; then one request probes (not a retry cycle), and once a probe is
    answered the spool is resent: every event once."""
    down_for = 2.0
    server.script(*[Answer(503)] * 4, Answer(503))  # the first batch's 4 attempts, then the first probe
    exporter = make_exporter(server.url, max_retries=3, backoff_base=0.01, backoff_max=down_for)
    with pytest.warns(HanditExportWarning, match="spooled"):
        exporter.write_events(make_events(0, 10))
        exporter.flush(10)
    assert len(server.requests) == 4 and exporter.stats["spooled_events"] == 10
    outage = time.monotonic()
    exporter.write_events(make_events(10, 10))
    exporter.flush(10)
    if time.monotonic() - outage < down_for:  # (a machine slower than that proves nothing here)
        assert len(server.requests) == 4, "a batch written while the endpoint is down makes no request"
        assert exporter.stats["spooled_events"] == 20
    assert wait_until(lambda: len(server.requests) >= 5, timeout=30)  # the probe
    assert wait_until(lambda: len(server.events) >= 20, timeout=30)  # the next probe is answered: all resent
    statuses = [r.status for r in server.requests]
    assert statuses[:5] == [503] * 5 and set(statuses[5:]) == {200}
    probe = server.requests[4]
    assert probe.batch_id == server.requests[0].batch_id  # the oldest spooled file, under its own id
    # the failed probe was one request: the next came only after another outage, as a probe again
    assert exporter.stats["retries"] == 3
    assert_exactly_once(server.events, range(20))
    assert wait_until(lambda: not spool_files(spool))


def test_a_new_batch_probes_with_one_attempt(server: IngestServer, make_exporter: Any) -> None:
    """The probe can be the next new batch (no spool here): one attempt, not max_retries+1."""
    server.script(*[Answer(503)] * 5)
    exporter = make_exporter(server.url, max_retries=3, backoff_base=0.01, backoff_max=0.3, max_spool_bytes=0)
    exporter.write_events(make_events(0, 5))
    exporter.flush(10)
    assert len(server.requests) == 4 and exporter.stats["dropped_events"] == 5
    assert wait_until(lambda: time.monotonic() >= exporter._down_until)  # the outage is over
    exporter.write_events(make_events(5, 5))
    exporter.flush(10)
    assert len(server.requests) == 5, "one request probes the endpoint"
    assert exporter.stats["retries"] == 3 and exporter.stats["dropped_events"] == 10
    assert wait_until(lambda: time.monotonic() >= exporter._down_until)  # down again after the failed probe
    exporter.write_events(make_events(10, 5))
    exporter.flush(10)
    assert wait_until(lambda: len(server.events) == 5)  # the next probe is answered
    assert_exactly_once(server.events, range(10, 15))


def _live_process() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])


def test_stale_claims_are_taken_over_and_live_ones_left(server: IngestServer, make_exporter: Any, spool: Path) -> None:
    """A ``.sending-<pid>`` claim is taken over when its pid is gone, or when it is older than
    10 minutes though its pid runs (the pid was reused); a fresh claim of a live process is its."""
    files = Spool(str(spool), 1 << 30, merge_bytes=512 * 1024)
    ids = {}
    for n, kind in enumerate(["dead", "old", "fresh"]):
        ids[kind] = str(uuid.uuid4())
        body = gzip_body(b'{"type":"call","session_id":"old","seq":%d}\n' % n, 1)
        path, _ = files.write(body, ids[kind], unsent=False)
        ids[kind + "-path"] = path
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = _live_process()
    try:
        os.rename(ids["dead-path"], f"{ids['dead-path']}.sending-{dead.pid}")
        old = f"{ids['old-path']}.sending-{live.pid}"
        os.rename(ids["old-path"], old)
        eleven_minutes_ago = time.time() - 660
        os.utime(old, (eleven_minutes_ago, eleven_minutes_ago))
        fresh = f"{ids['fresh-path']}.sending-{live.pid}"
        os.rename(ids["fresh-path"], fresh)
        exporter = make_exporter(server.url)
        exporter.write_events(make_events(100, 1))
        assert wait_until(lambda: {e["seq"] for e in server.events} >= {0, 1, 100})
        exporter.close()
        assert os.path.exists(fresh), "a live process's fresh claim is not taken"
        assert [p.name for p in spool.iterdir()] == [os.path.basename(fresh)]
    finally:
        live.kill()
        live.wait()
    sent = {r.batch_id for r in server.requests}
    assert ids["dead"] in sent and ids["old"] in sent and ids["fresh"] not in sent  # taken over under their ids
    assert_exactly_once([e for e in server.events if e["session_id"] == "old"], {0, 1})
    assert exporter.stats["resent_batches"] == 2
