"""Perfetto protobuf export: decoded here by a small protobuf reader and checked as Perfetto would read it."""
from __future__ import annotations

import io
import subprocess
import sys
from typing import Any

import pytest

import handit
from handit.reader import read_uvarint
from handit.renderers.perfetto import PerfettoTraceWriter

import asyncio_programs as progs

# field numbers of the messages read back (protos/perfetto/trace/...)
TRACE_PACKET = 1
P_TIMESTAMP, P_SEQ, P_EVENT, P_INTERNED, P_FLAGS, P_DESCRIPTOR = 8, 10, 11, 12, 13, 60
MESSAGES = {P_EVENT, P_INTERNED, P_DESCRIPTOR}


def fields(data: bytes) -> list[tuple[int, Any]]:
    """One protobuf message: ``(field, value)`` pairs; varints as ints, length-delimited as bytes."""
    out = []
    pos = 0
    while pos < len(data):
        key, pos = read_uvarint(data, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = read_uvarint(data, pos)
        elif wire == 2:
            size, pos = read_uvarint(data, pos)
            value = data[pos:pos + size]
            assert len(value) == size, "message cut short"
            pos += size
        elif wire == 1:
            value, pos = int.from_bytes(data[pos:pos + 8], "little"), pos + 8
        elif wire == 5:
            value, pos = int.from_bytes(data[pos:pos + 4], "little"), pos + 4
        else:
            raise AssertionError(f"wire type {wire}")
        out.append((field, value))
    return out


def one(pairs: list[tuple[int, Any]], field: int, default: Any = None) -> Any:
    found = [v for f, v in pairs if f == field]
    assert len(found) <= 1
    return found[0] if found else default


class Decoded:
    """A trace read back: tracks, and slices per track in the order Perfetto's sorter gives them."""

    def __init__(self, data: bytes) -> None:
        self.tracks: dict[int, dict[str, Any]] = {}
        self.names: dict[int, str] = {}
        self.notes: dict[int, str] = {}
        self.categories: dict[int, str] = {}
        self.events: list[tuple[int, int, int, int, dict[str, Any]]] = []  # (ts, order, type, track, event)
        packets = [v for f, v in fields(data) if f == TRACE_PACKET]
        assert one(fields(packets[0]), P_FLAGS) == 1, "the first packet clears the sequence's state"
        for order, packet in enumerate(packets):
            p = fields(packet)
            assert one(p, P_SEQ) == 1
            interned = one(p, P_INTERNED)
            if interned is not None:
                for f, entry in fields(interned):
                    e = fields(entry)
                    table = self.names if f == 2 else self.notes if f == 3 else self.categories
                    assert one(e, 1) not in table, "an iid is sent once"
                    table[one(e, 1)] = one(e, 2).decode()
            descriptor = one(p, P_DESCRIPTOR)
            if descriptor is not None:
                d = fields(descriptor)
                track: dict[str, Any] = {"parent": one(d, 5), "name": (one(d, 2) or b"").decode()}
                if one(d, 3) is not None:
                    track.update(kind="process", name=one(fields(one(d, 3)), 6).decode())
                elif one(d, 4) is not None:
                    track.update(kind="thread", name=one(fields(one(d, 4)), 5).decode())
                else:
                    track["kind"] = "child"
                self.tracks[one(d, 1)] = track
            event = one(p, P_EVENT)
            if event is not None:
                e = fields(event)
                assert one(e, 11) in self.tracks, "a track is described before its events"
                if one(e, 9) != 2:  # what names interned data says so
                    assert one(p, P_FLAGS) == 2
                notes = {self.notes[one(fields(a), 1)]: fields(a)[1][1] for f, a in e if f == 4}
                self.events.append((one(p, P_TIMESTAMP), order, one(e, 9), one(e, 11),
                                    {"name": self.names.get(one(e, 10)), "notes": notes,
                                     "category": self.categories.get(one(e, 3))}))

    def slices(self) -> dict[int, list[tuple[str, int, int, int]]]:
        """Per track: (name, start, end, depth), matching each END to the innermost open BEGIN as Perfetto does."""
        out: dict[int, list[tuple[str, int, int, int]]] = {}
        stacks: dict[int, list[tuple[str, int]]] = {}
        for ts, _, kind, track, event in sorted(self.events, key=lambda e: (e[0], e[1])):
            stack = stacks.setdefault(track, [])
            if kind == 1:
                stack.append((event["name"], ts))
            elif kind == 2:
                assert stack, f"an END with nothing open on track {self.tracks[track]}"
                name, start = stack.pop()
                out.setdefault(track, []).append((name, start, ts, len(stack)))
        assert not any(stacks.values()), "every slice ends"
        return out


def export(events: list[dict[str, Any]]) -> Decoded:
    out = io.BytesIO()
    writer = PerfettoTraceWriter(out)
    for e in events:
        writer.add(e)
    writer.close()
    assert writer.bytes_written == len(out.getvalue())
    return Decoded(out.getvalue())


def traced(name: str) -> list[dict[str, Any]]:
    with handit.session("perfetto") as s:
        progs.run(name)
    return s.events


def proper(slices: list[tuple[str, int, int, int]]) -> bool:
    """Slices drawn on one track nest."""
    return bool(progs.nests([(start, end) for _, start, end, _ in slices]))


def test_gathered_tasks_are_tracks_nested_under_their_thread(engine: Any) -> None:
    d = export(traced("gather"))
    slices = d.slices()
    by_name: dict[str, list[int]] = {}
    for track, items in slices.items():
        assert proper(items)
        for name, *_ in items:
            by_name.setdefault(name, []).append(track)
    llm_tracks = by_name["llm"]
    assert len(set(llm_tracks)) == 2
    for track in llm_tracks:
        info = d.tracks[track]
        assert info["kind"] == "child" and info["name"].startswith("Task-")
        assert d.tracks[info["parent"]]["kind"] == "thread"  # grouped under its thread
    main_track = by_name["main_gather"][0]
    assert main_track not in llm_tracks and d.tracks[main_track]["kind"] == "child"
    assert [n for n in by_name if n == "parse"] and set(by_name["parse"]) <= set(llm_tracks)
    threads = [t for t in d.tracks.values() if t["kind"] == "thread"]
    assert threads and all(d.tracks[t["parent"]]["kind"] == "process" for t in threads)


def test_slices_carry_arguments_results_and_exceptions(engine: Any) -> None:
    events = traced("exception")
    d = export(events)
    begins = [e for _, _, kind, _, e in d.events if kind == 1]
    failing = next(e for e in begins if e["name"] == "failing")
    assert failing["notes"]["i"] == b"1" and failing["notes"]["raised"] == 1
    assert failing["category"] == "asyncio_programs"
    llm = next(e for e in begins if e["name"] == "llm")
    assert llm["notes"]["return"] == b"4" and llm["notes"]["suspended_ns"] >= 0
    instants = [e for _, _, kind, _, e in d.events if kind == 3]
    raised = [(e["type_name"], e["message"].encode()) for e in events if e["type"] == "exception"]
    assert raised and sorted((e["name"], e["notes"]["message"]) for e in instants) == sorted(raised)


def test_interleaved_generators_go_to_lanes_where_they_nest() -> None:
    sid = "s"

    def call(cid: int, func: str, t: int, parent: int | None) -> dict[str, Any]:
        return {"type": "call", "session_id": sid, "call_id": cid, "parent_id": parent, "func": func, "module": "m",
                "t0_ns": t, "args_preview": {}, "thread": 1}

    def ret(cid: int, t: int) -> dict[str, Any]:
        return {"type": "return", "session_id": sid, "call_id": cid, "t1_ns": t, "locals_preview": {}, "suspended_ns": 1}

    events = [call(1, "main", 0, None), call(2, "g1", 10, 1), call(3, "g2", 20, 1), ret(2, 30), ret(3, 40), ret(1, 50)]
    d = export(events)
    slices = d.slices()
    assert all(proper(items) for items in slices.values())
    (g1_track,) = [t for t, items in slices.items() if any(n == "g1" for n, *_ in items)]
    assert d.tracks[g1_track]["name"] == "async 1" and d.tracks[d.tracks[g1_track]["parent"]]["kind"] == "thread"


@pytest.mark.engine_dependent  # a traced child process
def test_cli_exports_perfetto_and_warns_when_json_would_be_too_big(tmp_path: Any) -> None:
    script = tmp_path / "prog.py"
    script.write_text("import asyncio\n"
                      "async def llm(i):\n    await asyncio.sleep(0)\n    return i\n"
                      "async def main():\n    return await asyncio.gather(*(llm(i) for i in range(50)))\n"
                      "asyncio.run(main())\n")
    from conftest import child_env

    env = child_env()
    run = subprocess.run([sys.executable, "-m", "handit", "run", "-o", str(tmp_path / "t.handit"), str(script)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    done = subprocess.run([sys.executable, "-m", "handit", "export", "--format", "perfetto", str(tmp_path / "t.handit")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    d = Decoded((tmp_path / "t.pftrace").read_bytes())
    llm_tracks = {track for track, items in d.slices().items() if any(n == "llm" for n, *_ in items)}
    assert len(llm_tracks) == 50
    assert "warning" not in done.stderr
    from handit import cli

    big = cli._too_big_warning("chrome", 3 << 30, expected=True)
    assert "--format perfetto" in big and "--session" in big and "3.0 GB" in big


@pytest.mark.engine_dependent  # a session with the run's default engine
def test_cli_warns_before_a_json_export_too_big_to_open(tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from handit import cli

    trace = tmp_path / "t.handit"
    handit.configure(output_file=str(trace))
    with handit.session("big"):
        progs.run("gather")
    handit.reset_config()
    monkeypatch.setattr(cli, "JSON_OPEN_LIMIT", 1000)  # this small trace stands for a big one
    assert cli.main(["export", "--format", "chrome", str(trace), "-o", str(tmp_path / "t.json")]) == 0
    err = capsys.readouterr().err
    assert err.count("warning") == 1 and "will be about" in err and "--format perfetto" in err
