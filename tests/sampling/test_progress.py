"""Sampling progress in a log (stderr not a terminal): plain lines with rows/s, tokens/s and ETA."""

from __future__ import annotations

from delia.sampling import run as sampling_run


def test_progress_prints_plain_lines_when_stderr_is_not_a_terminal(capsys, monkeypatch):
    now = [0.0]
    monkeypatch.setattr(sampling_run.time, "perf_counter", lambda: now[0])
    with sampling_run._Progress(100, enabled=True, every=30.0) as bar:
        for t, rows, tokens in ((10.0, 10, 500), (40.0, 30, 1500), (50.0, 10, 500)):
            now[0] = t  # t=10: under 30 s since the start, no line; t=40: a line; t=50: 10 s later, none
            bar.advance(rows, tokens)
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("sampling ")]
    assert lines[0] == "sampling 40/100 rows, 1.00 rows/s, 50.0 tok/s, ETA 1m00s"
    assert lines[-1].startswith("sampling 50/100 rows, 1.00 rows/s") and len(lines) == 2  # + the final line


def test_progress_disabled_prints_nothing(capsys):
    with sampling_run._Progress(5, enabled=False) as bar:
        bar.advance(5, 10)
    assert capsys.readouterr().err == ""
