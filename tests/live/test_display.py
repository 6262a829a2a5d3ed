"""The live view: on a terminal whole output lines above a redrawn status line, in a log
a plain line per test; the child's partial lines are never cut by the status line."""

from __future__ import annotations

import io

from bench.live.display import PlainLines, StatusLine
from bench.live.events import split_events


def test_events_are_split_from_a_stream_keeping_the_torn_tail() -> None:
    events, rest = split_events(b'{"event": "start", "nodeid": "a"}\nnot json\n{"event": "st')
    assert events == [{"event": "start", "nodeid": "a"}] and rest == b'{"event": "st'


def test_status_line_shows_test_n_of_total_step_and_failures() -> None:
    out, child = io.StringIO(), io.BytesIO()
    view = StatusLine(out, child)
    view.event({"event": "collected", "total": 3})
    view.event({"event": "start", "nodeid": "tests/x.py::test_a", "index": 2, "total": 3})
    view.event({"event": "step", "text": "switch to emulation"})
    view.event({"event": "finished", "nodeid": "tests/x.py::test_a", "outcome": "failed"})
    line = view.render()
    assert line.startswith("[2/3] · 0:00:0") and "x.py::test_a" in line
    assert "switch to emulation" in line and "1 failed" in line
    view.output(b"tests/x.py ..")  # a partial line is held back...
    assert child.getvalue() == b""
    view.output(b"F\nnext")  # ...and printed whole, above the status line
    assert child.getvalue() == b"tests/x.py ..F\n"
    assert out.getvalue().endswith("\r\x1b[K" + view.render())
    view.close()
    assert child.getvalue() == b"tests/x.py ..F\nnext\n"
    assert out.getvalue().endswith("\r\x1b[K")  # the status line is gone


def test_a_question_is_not_drawn_over_until_answered() -> None:
    out = io.StringIO()
    view = StatusLine(out, io.BytesIO())
    view.prompt("run it? ")
    before = out.getvalue()
    view.tick()
    assert out.getvalue() == before and before.endswith("npabench: run it? ")
    view.resume()
    assert out.getvalue().endswith(view.render())


def test_plain_lines_for_logs() -> None:
    out, child = io.StringIO(), io.BytesIO()
    view = PlainLines(out, child)
    view.output(b"t.py .")  # pytest's row of dots is passed on whole, never cut by our lines
    view.event({"event": "start", "nodeid": "t.py::test_a", "index": 1, "total": 2})
    view.event({"event": "step", "text": "setup"})
    view.event({"event": "step", "text": "switch to emulation"})
    view.event(
        {"event": "finished", "nodeid": "t.py::test_a", "outcome": "passed", "duration": 1.5}
    )
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("npabench: [1/2] t.py::test_a (elapsed 0:00:0")
    assert lines[1] == "npabench: [1/2] step: switch to emulation"  # phases are left out
    assert lines[2].startswith("npabench: [1/2] passed in 1.5 s: t.py::test_a")
    assert child.getvalue() == b""
    view.output(b".\n")
    assert child.getvalue() == b"t.py ..\n"
