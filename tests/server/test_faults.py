"""FaultLog: a fault is logged with its details under a short reference; the same fault again within the window
is not logged but quotes the same reference; after the window it is logged with the count it stood for."""

from __future__ import annotations

import logging
import time

import pytest

from cnnserve.server.faults import FaultLog


def test_a_repeat_within_the_window_quotes_the_logged_reference(caplog: pytest.LogCaptureFixture) -> None:
    log = FaultLog(window_s=60.0)
    with caplog.at_level(logging.ERROR, logger="cnnserve.server.faults"):
        first = log.report("Service.Method", KeyError("a bug"))
        again = log.report("Service.Method", KeyError("a bug"))
        other = log.report("Service.Method", ValueError("another bug"))
    assert first == again != other and len(first) == 8
    logged = [r for r in caplog.records if r.name == "cnnserve.server.faults"]
    assert len(logged) == 2
    assert f"[ref {first}]" in logged[0].getMessage() and logged[0].exc_info is not None


def test_after_the_window_it_logs_again_with_the_repeats(caplog: pytest.LogCaptureFixture) -> None:
    log = FaultLog(window_s=0.05)
    with caplog.at_level(logging.ERROR, logger="cnnserve.server.faults"):
        first = log.report("batch", RuntimeError("onnxruntime failed"), traceback=False)
        for _ in range(3):
            log.report("batch", RuntimeError("onnxruntime failed"), traceback=False)
        time.sleep(0.06)
        later = log.report("batch", RuntimeError("onnxruntime failed"), traceback=False)
    messages = [r.getMessage() for r in caplog.records if r.name == "cnnserve.server.faults"]
    assert later != first and len(messages) == 2
    assert "(and 3 more like it in the last 0 s)" in messages[1]
    assert all(r.exc_info is None for r in caplog.records)
