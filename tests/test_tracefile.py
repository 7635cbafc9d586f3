"""Tests for handit.tracefile: the compact .handit file written, appended by many processes, and read back streaming."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import pytest
from conftest import child_env

from handit._policy import CodeInfo
from handit.frames import encode_frame
from handit.reader import BlockEncoder
from handit.tracefile import (
    HEADER_SIZE,
    MAGIC,
    TraceFileWarning,
    TraceFileWriter,
    TraceFormatError,
    detect_format,
    iter_events,
    iter_frames,
    iter_trace,
    read_trace,
)

T = 1_700_000_000_000_000_000
A = 140_000_000_000_001
CODES = [
    CodeInfo(0, "app", "main", "/app.py", 1, False, (), ()),
    CodeInfo(1, "app", "work", "/app.py", 10, False, ("x",), (False,)),
]


def start_event(sid: str, ts: int = T) -> dict[str, Any]:
    return {"type": "session_start", "session_id": sid, "tag": "t", "ts_ns": ts, "attrs": {}}


def end_event(sid: str, ts: int) -> dict[str, Any]:
    return {"type": "session_end", "session_id": sid, "ts_ns": ts, "duration_ns": ts - T, "stats": {}}


def write_sample(path: Path, sid: str) -> None:
    """One session: two blocks (a call spanning both), an HTTP event, the end."""
    with TraceFileWriter(str(path)) as w:
        w.session_start(start_event(sid))
        w.codes(CODES[:1])
        w.block(sid, BlockEncoder(A, T).call(0, T + 10).to_bytes())
        w.codes(CODES)
        w.block(sid, BlockEncoder(A, T + 20).call(1, T + 20, args=["7"]).ret(T + 30, "49").to_bytes())
        w.events([{"type": "http_request", "session_id": sid, "method": "GET", "url": "http://x/é", "t0_ns": T + 35}])
        w.block(sid, BlockEncoder(A, T + 40).ret(T + 40, "None").to_bytes())
        w.session_end(end_event(sid, T + 50))


def check_balanced(events: list[dict[str, Any]]) -> None:
    """Every call has exactly one return, after it."""
    open_ids: set[int] = set()
    for e in events:
        if e["type"] == "call":
            assert e["call_id"] not in open_ids
            open_ids.add(e["call_id"])
        elif e["type"] == "return":
            open_ids.remove(e["call_id"])
    assert not open_ids


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "t.handit"
    sid = str(uuid.uuid4())
    write_sample(path, sid)
    assert detect_format(str(path)) == "handit"
    events = read_trace(str(path))
    assert [(e["type"], e.get("func")) for e in events] == [
        ("session_start", None), ("call", "main"), ("call", "work"), ("return", "work"),
        ("http_request", None), ("return", "main"), ("session_end", None),
    ]
    assert events[0] == start_event(sid)
    assert events[2]["args_preview"] == {"x": "7"} and events[2]["parent_id"] == 1
    assert events[3]["locals_preview"] == {"return": "49"}
    assert events[4]["url"] == "http://x/é"
    assert events[5]["dt_ns"] == 30
    assert events[6] == end_event(sid, T + 50)
    assert all(e["session_id"] == sid for e in events)
    assert list(iter_events(str(path))) == events


def test_file_layout_and_codes_written_once(tmp_path: Path) -> None:
    path = tmp_path / "t.handit"
    sid = str(uuid.uuid4())
    with TraceFileWriter(str(path)) as w:
        w.codes(CODES[:1])
        w.codes(CODES[:1])
        w.codes(CODES)
        w.codes(CODES)
        w.block(sid, b"\x01\x02")
    data = path.read_bytes()
    assert data.startswith(MAGIC)
    frames = list(iter_frames(str(path)))
    assert [f[0] for f in frames] == [b"C", b"C", b"B"]
    assert json.loads(frames[0][2]) == [[0, "app", "main", "/app.py", 1, []]]
    assert json.loads(frames[1][2]) == [[1, "app", "work", "/app.py", 10, ["x"]]]
    assert frames[2][2] == uuid.UUID(sid).bytes + b"\x01\x02"
    assert {f[1] for f in frames} == {w.stream_id} and len(w.stream_id) == 8
    assert w.bytes_written == len(data) and w.frames_written == 3
    assert data[len(MAGIC) : len(MAGIC) + 3] == b"\xfe\xfdC"
    assert int.from_bytes(data[len(MAGIC) + 3 : len(MAGIC) + 7], "little") == len(frames[0][2])


def test_small_frames_are_buffered_and_whole(tmp_path: Path) -> None:
    path = tmp_path / "t.handit"
    w = TraceFileWriter(str(path), buffer_bytes=1000, flush_interval=None)
    sid = str(uuid.uuid4())
    w.session_start(start_event(sid))
    assert path.stat().st_size == len(MAGIC)  # gathered, not written yet
    w.block(sid, b"\x00" * 2000)  # larger than the buffer: written at once, after what was gathered
    assert path.stat().st_size == w.bytes_written > 2000
    w.close()
    w.close()
    with pytest.raises(ValueError):
        w.session_end(end_event(sid, T))


def test_created_owner_only(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        TraceFileWriter(str(tmp_path / "a.handit")).close()
    finally:
        os.umask(old)
    TraceFileWriter(str(tmp_path / "b.handit")).close()
    for name in ("a.handit", "b.handit"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600


def test_unwritable_path_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        TraceFileWriter(str(tmp_path / "missing" / "t.handit"))
    with pytest.raises(OSError):
        TraceFileWriter(str(tmp_path))


def test_not_a_trace_file(tmp_path: Path) -> None:
    path = tmp_path / "x.handit"
    path.write_bytes(b'{"type": "call"}\n')
    assert detect_format(str(path)) == "jsonl"
    with pytest.raises(TraceFormatError):
        list(iter_trace(str(path)))


def test_truncated_file_reads_up_to_the_last_whole_frame(tmp_path: Path) -> None:
    full = tmp_path / "full.handit"
    sid = str(uuid.uuid4())
    write_sample(full, sid)
    data = full.read_bytes()
    complete = read_trace(str(full))
    cut_path = tmp_path / "cut.handit"
    starts = [len(MAGIC)]  # where each frame starts, and the end
    while starts[-1] < len(data):
        starts.append(starts[-1] + HEADER_SIZE + int.from_bytes(data[starts[-1] + 3 : starts[-1] + 7], "little"))
    for cut in range(len(MAGIC), len(data)):
        cut_path.write_bytes(data[:cut])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            events = read_trace(str(cut_path))
        said = [str(w.message) for w in caught]
        start = max(s for s in starts if s <= cut)
        assert said == ([] if cut == start else
                        [f"{cut_path}: truncated: the last frame (at offset {start}) is cut short, {cut - start:,} of "
                         f"{HEADER_SIZE if cut - start < HEADER_SIZE else min(s for s in starts if s > cut) - start:,} bytes; "
                         "everything intact was read"])
        check_balanced(events)
        if not events:
            continue  # cut inside the start frame
        assert events[0] == complete[0]
        assert events[-1]["type"] == "session_end" and events[-1]["incomplete"] is True
        real = [e for e in events if not e.get("incomplete") and not e.get("abandoned")]
        assert real == complete[: len(real)]  # a prefix of the whole file's events


def test_crashed_session_is_finished_at_its_last_timestamp(tmp_path: Path) -> None:
    path = tmp_path / "t.handit"
    sid = str(uuid.uuid4())
    w = TraceFileWriter(str(path))
    w.session_start(start_event(sid))
    w.codes(CODES)
    w.block(sid, BlockEncoder(A, T + 5).call(0, T + 5).call(1, T + 8).to_bytes())
    w.flush()  # then the process dies: no end frame
    events = read_trace(str(path))
    assert [e["type"] for e in events] == ["session_start", "call", "call", "return", "return", "session_end"]
    assert events[3]["incomplete"] is True and events[3]["t1_ns"] == T + 8
    end = events[-1]
    assert end["incomplete"] is True and end["ts_ns"] == T + 8 and end["duration_ns"] == 8
    assert end["stats"]["calls"] == 2 and end["stats"]["incomplete"] == 2


def test_end_frame_closes_calls_left_open(tmp_path: Path) -> None:
    path = tmp_path / "t.handit"
    sid = str(uuid.uuid4())
    with TraceFileWriter(str(path)) as w:
        w.session_start(start_event(sid))
        w.codes(CODES)
        w.block(sid, BlockEncoder(A, T).call(0, T + 1).to_bytes())
        w.session_end(end_event(sid, T + 100))
    events = read_trace(str(path))
    assert events[-2]["incomplete"] is True and events[-2]["t1_ns"] == T + 100
    assert "incomplete" not in events[-1]


def test_blocks_without_a_start_frame(tmp_path: Path) -> None:
    path = tmp_path / "t.handit"
    sid = str(uuid.uuid4())
    with TraceFileWriter(str(path)) as w:
        w.codes(CODES)
        w.block(sid, BlockEncoder(A, T).call(0, T + 1).ret(T + 3).to_bytes())
    events = read_trace(str(path))
    assert [e["type"] for e in events] == ["call", "return", "session_end"]
    assert events[-1]["session_id"] == sid and events[-1]["duration_ns"] == 3


def test_magic_in_the_middle_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "t.handit"
    s1, s2 = str(uuid.uuid4()), str(uuid.uuid4())
    write_sample(path, s1)
    with open(path, "ab") as f:
        f.write(MAGIC + MAGIC)  # two appenders that both found the file empty
    write_sample(path, s2)
    events = read_trace(str(path))
    assert [e["session_id"] for e in events if e["type"] == "session_end"] == [s1, s2]
    assert not any(e.get("incomplete") for e in events)


def test_garbage_in_the_middle_is_skipped_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "t.handit"
    s1, s2 = str(uuid.uuid4()), str(uuid.uuid4())
    write_sample(path, s1)
    at = path.stat().st_size
    with open(path, "ab") as f:
        f.write(b"\x00" * 40 + b"\xfe\xfd" + b"\x00" * 30)  # a mark with no frame behind it
    write_sample(path, s2)
    with pytest.warns(TraceFileWarning, match=rf"damaged: skipped 1 region.*\(72 bytes, at offset {at}\)"):
        events = read_trace(str(path))
    assert [e["session_id"] for e in events if e["type"] == "session_end"] == [s1, s2]


def test_unknown_frame_types_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "t.handit"
    sid = str(uuid.uuid4())
    write_sample(path, sid)
    with open(path, "ab") as f:
        f.write(encode_frame(b"X", b"\x00" * 8, b"abc"))  # a future frame type
    write_sample(path, str(uuid.uuid4()))
    assert len([e for e in read_trace(str(path)) if e["type"] == "session_end"]) == 2


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_fork_child_gets_its_own_stream(tmp_path: Path) -> None:
    path = tmp_path / "t.handit"
    parent_sid, child_sid = str(uuid.uuid4()), str(uuid.uuid4())
    w = TraceFileWriter(str(path))
    w.session_start(start_event(parent_sid))  # buffered when the fork happens
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            w.session_start(start_event(child_sid))
            w.session_end(end_event(child_sid, T + 1))
            w.close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert status == 0
    w.session_end(end_event(parent_sid, T + 2))
    w.close()
    frames = list(iter_frames(str(path)))
    by_stream: dict[bytes, list[str]] = {}
    for ftype, stream, payload in frames:
        by_stream.setdefault(stream, []).append(ftype.decode() + json.loads(payload)["session_id"])
    assert sorted(by_stream.values()) == sorted([["S" + parent_sid, "E" + parent_sid], ["S" + child_sid, "E" + child_sid]])


APPENDER = textwrap.dedent(
    """
    import sys, threading, time, uuid
    from handit._policy import CodeInfo
    from handit.reader import BlockEncoder
    from handit.tracefile import TraceFileWriter

    path, proc, calls, buffer_bytes, start_at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    codes = [CodeInfo(i, "p%d" % proc, "p%d_f%d" % (proc, i), "/p.py", i, False, ("i",), (False,)) for i in range(calls // 10)]
    while time.time() < start_at:
        time.sleep(0.001)
    w = TraceFileWriter(path, buffer_bytes=buffer_bytes)
    sid = str(uuid.uuid4())
    t = time.time_ns()
    w.session_start({"type": "session_start", "session_id": sid, "ts_ns": t, "tag": "p%d" % proc})
    for chunk in range(calls // 10):
        w.codes(codes[: chunk + 1])
        enc = BlockEncoder(threading.get_ident(), t)
        for i in range(10):
            t += 100
            enc.call(chunk, t, args=[str(chunk * 10 + i)])
            t += 50
            enc.ret(t, "x" * (i * 20))
        w.block(sid, enc.to_bytes())
        if chunk % 50 == 0:
            w.events([{"type": "http_request", "session_id": sid, "n": chunk}])
    w.session_end({"type": "session_end", "session_id": sid, "ts_ns": t})
    w.close()
    print(sid)
    """
)


@pytest.mark.parametrize("buffer_bytes", [0, 256 * 1024], ids=["frame-per-write", "buffered"])
def test_processes_appending_to_one_file(tmp_path: Path, buffer_bytes: int) -> None:
    path = tmp_path / "shared.handit"
    procs, calls = 4, 2000
    env = child_env(traced=False)  # the writer alone
    start_at = time.time() + 1.0
    children = [
        subprocess.Popen(
            [sys.executable, "-c", APPENDER, str(path), str(p), str(calls), str(buffer_bytes), str(start_at)],
            env=env, stdout=subprocess.PIPE, text=True, cwd=tmp_path,
        )
        for p in range(procs)
    ]
    sids = {}
    for p, child in enumerate(children):
        out, _ = child.communicate(timeout=120)
        assert child.returncode == 0
        sids[out.strip()] = p
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    frames = list(iter_frames(str(path)))  # every frame parses: a damaged one would warn (an error here)
    assert len({stream for _, stream, _ in frames}) == procs
    events = read_trace(str(path))
    check_balanced(events)
    for sid, p in sids.items():
        mine = [e for e in events if e["session_id"] == sid]
        calls_seen = [e for e in mine if e["type"] == "call"]
        assert len(calls_seen) == calls
        assert sorted(int(e["args_preview"]["i"]) for e in calls_seen) == list(range(calls))
        assert all(e["func"].startswith(f"p{p}_f") for e in calls_seen)  # code tables kept apart
        assert len([e for e in mine if e["type"] == "return"]) == calls
        assert len([e for e in mine if e["type"] == "http_request"]) == calls // 10 // 50
        assert mine[0]["type"] == "session_start" and mine[-1]["type"] == "session_end"
        assert not any(e.get("incomplete") for e in mine)


STREAM_READER = textwrap.dedent(
    """
    import json, resource, sys
    from handit.tracefile import iter_events

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    reports = []
    counts = {}
    for event in iter_events(sys.argv[1], progress=lambda done, total: reports.append((done, total))):
        counts[event["type"]] = counts.get(event["type"], 0) + 1
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"base_kb": base, "peak_kb": peak, "counts": counts, "reports": reports}))
    """
)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KB on Linux")
def test_streaming_a_200mb_file_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.handit"
    sid = str(uuid.uuid4())
    enc = BlockEncoder(A, T)
    calls_per_block = 2000
    for i in range(calls_per_block):
        enc.call(1, T + i * 10, args=["v" * 200]).ret(T + i * 10 + 5, "r" * 40)
    block = enc.to_bytes()
    blocks = 200 * 1024 * 1024 // len(block) + 1
    with TraceFileWriter(str(path)) as w:
        w.session_start(start_event(sid))
        w.codes(CODES)
        for _ in range(blocks):
            w.block(sid, block)
        w.session_end(end_event(sid, T + 10**9))
    size = path.stat().st_size
    assert size >= 200 * 1024 * 1024
    result = subprocess.run(
        [sys.executable, "-c", STREAM_READER, str(path)],
        env=child_env(traced=False), cwd=tmp_path, capture_output=True, text=True, timeout=300, check=True,
    )
    out = json.loads(result.stdout)
    assert out["counts"] == {"session_start": 1, "call": blocks * calls_per_block, "return": blocks * calls_per_block, "session_end": 1}
    growth_mb = (out["peak_kb"] - out["base_kb"]) / 1024
    assert growth_mb < 48, f"reading a {size >> 20} MB file grew the peak RSS by {growth_mb:.0f} MB"
    reports = out["reports"]
    assert len(reports) > 10 and reports[-1] == [size, size]
    assert all(a[0] <= b[0] for a, b in zip(reports, reports[1:]))


def test_iter_events_reads_jsonl_and_says_a_last_line_is_cut(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    lines = [json.dumps({"type": "call", "call_id": i}) for i in range(3)]
    path.write_text("\n".join(lines) + '\n\n{"type": "ret')
    assert detect_format(str(path)) == "jsonl"
    with pytest.warns(TraceFileWarning, match=f"truncated: the last line .at offset {path.stat().st_size - 13}. is cut short"):
        assert [e["call_id"] for e in iter_events(str(path))] == [0, 1, 2]
    path.write_text("\n".join(lines))  # a whole last line without its newline: nothing to say
    assert [e["call_id"] for e in iter_events(str(path))] == [0, 1, 2]
    path.write_text(lines[0] + "\nnot json\n" + lines[1] + "\n")
    with pytest.warns(TraceFileWarning, match="damaged: skipped 1 line"):
        assert [e["call_id"] for e in read_trace(str(path))] == [0, 1]


def test_header_size() -> None:
    assert HEADER_SIZE == 23


def test_damaged_json_frames_are_skipped_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "t.handit"
    sid = str(uuid.uuid4())
    with TraceFileWriter(str(path)) as w:
        w._frame(b"J", b"{not json")
        w._frame(b"S", b"[1, 2]")
        w._frame(b"C", b'[["x"]]')
        w._frame(b"B", b"short")
    write_sample(path, sid)
    with pytest.warns(TraceFileWarning, match="damaged: 4 frame.s. could not be decoded"):
        events = read_trace(str(path))
    assert [e["type"] for e in events][0] == "session_start" and events[-1] == end_event(sid, T + 50)


KILLED = textwrap.dedent(
    """
    import sys, threading, time
    import handit

    def slow(i):
        time.sleep(0.01)
        return i

    def work(name, started):
        with handit.session(name):
            started.set()
            i = 0
            while True:
                slow(i)
                sys.stdout.write(f"{name} {i} {time.time_ns()}\\n")
                sys.stdout.flush()
                i += 1

    handit.configure(capture="args")
    for name, path in (("handit", sys.argv[1]), ("jsonl", sys.argv[2])):
        handit.configure(output_file=path)  # a session keeps the file it started with
        started = threading.Event()
        threading.Thread(target=work, args=(name, started), daemon=True).start()
        started.wait()
    time.sleep(60)
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_loses_at_most_the_last_second(tmp_path: Path, engine: tuple[str, str]) -> None:
    """A long-lived program killed with SIGKILL: every call made more than 1.5 s before is on disk, in both formats."""
    eng, src = engine
    paths = {"handit": tmp_path / "t.handit", "jsonl": tmp_path / "t.jsonl"}
    env = {k: v for k, v in child_env().items() if not k.startswith("HANDIT_")}
    env.update(HANDIT_ENGINE=eng, HANDIT_SOURCE=src)
    prog = tmp_path / "prog.py"  # a file: code from -c is "<string>", which HANDIT_EXCLUDE_FILES leaves out
    prog.write_text(KILLED)
    child = subprocess.Popen([sys.executable, str(prog), str(paths["handit"]), str(paths["jsonl"])],
                             env=env, cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    done: dict[str, list[tuple[int, int]]] = {"handit": [], "jsonl": []}
    first = None
    for line in child.stdout:
        name, i, t = line.split()
        done[name].append((int(i), int(t)))
        first = first or int(t)
        if int(t) - first > 2.7e9:
            break
    killed_at = time.time_ns()
    child.kill()
    child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    for name, path in paths.items():
        recorded = {int(e["args_preview"]["i"]) for e in read_trace(str(path)) if e["type"] == "call" and e["func"] == "slow"}
        older = [i for i, t in done[name] if t < killed_at - 1.5e9]
        assert len(older) > 20, done[name][:3]
        missing = [i for i in older if i not in recorded]
        assert not missing, f"{name}: {len(missing)} of {len(older)} calls older than 1.5 s are not in the file"
