"""core/supervise.py: restart with capped backoff, one WARNING line, a metric, tracebacks only at DEBUG.

No real sleeps: the waits and the clock are injected.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid

import pytest
from prometheus_client import REGISTRY

from regionguard.core import supervise
from regionguard.core.supervise import Backoff, guard, supervised, supervised_async, swallowed

SECRET_DSN = "postgresql://app:s3cr3t-pw@db-east:5432/app"


def errors(component: str, kind: str) -> float:
    return REGISTRY.get_sample_value("regionguard_background_errors_total",
                                     {"component": component, "kind": kind}) or 0.0


def restarts(component: str) -> float:
    return REGISTRY.get_sample_value("regionguard_background_restarts_total", {"component": component}) or 0.0


def unique(name: str) -> str:
    return f"test.{name}.{uuid.uuid4().hex[:6]}"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(autouse=True)
def fresh_throttle(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(supervise, "_throttle", supervise._Throttle(supervise.REPORT_EVERY_S, clock=clock))
    return clock


def warnings_of(caplog, component):
    return [r for r in caplog.records if r.levelno >= logging.WARNING and component in r.getMessage()]


def debugs_of(caplog, component):
    return [r for r in caplog.records if r.levelno == logging.DEBUG and component in r.getMessage()]


def assert_one_line_each(records):
    for r in records:
        text = r.getMessage()
        assert "\n" not in text and "Traceback" not in text, text
        assert r.exc_info is None and not r.exc_text, "a WARNING must not carry the traceback"


# ---- backoff -------------------------------------------------------------------------------------------
def test_backoff_doubles_up_to_the_cap_and_resets_after_a_healthy_run():
    b = Backoff(initial_s=0.1, max_s=1.0, factor=2.0, healthy_after_s=60)
    assert [b.next_delay(0.0) for _ in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert b.next_delay(59.0) == 1.0  # not healthy long enough
    assert b.next_delay(60.0) == pytest.approx(0.1)  # a long good run: start over
    assert b.next_delay(0.0) == pytest.approx(0.2)
    b.reset()
    assert b.next_delay(0.0) == pytest.approx(0.1)


@pytest.mark.parametrize("kw", [{"initial_s": 0}, {"initial_s": 2, "max_s": 1}, {"factor": 0.5}])
def test_backoff_rejects_nonsense(kw):
    with pytest.raises(ValueError):
        Backoff(**kw)


# ---- supervised (threads) ------------------------------------------------------------------------------
def test_supervised_restarts_with_backoff_counts_and_logs_one_line_each(caplog):
    caplog.set_level(logging.DEBUG)
    comp = unique("thread")
    stop = threading.Event()
    runs, waits = [], []

    def body():
        runs.append(1)
        if len(runs) <= 4:
            raise RuntimeError(f"broken #{len(runs)}: cannot reach {SECRET_DSN}\nsecond line")

    def wait(delay):
        waits.append(delay)
        return False

    supervised(comp, body, stop, backoff=Backoff(0.1, 0.5), wait=wait, clock=Clock())
    assert len(runs) == 5  # 4 failures, then it returned: done
    assert waits == pytest.approx([0.1, 0.2, 0.4, 0.5])
    assert errors(comp, "RuntimeError") == 4
    assert restarts(comp) == 4
    warn = warnings_of(caplog, comp)
    assert len(warn) == 4
    assert_one_line_each(warn)
    assert "RuntimeError: broken #1" in warn[0].getMessage() and "restarting in 0.1s" in warn[0].getMessage()
    assert all("s3cr3t" not in r.getMessage() for r in caplog.records), "passwords are redacted everywhere"
    tb = debugs_of(caplog, comp)
    assert len(tb) == 4 and all("Traceback" in r.getMessage() and "in body" in r.getMessage() for r in tb)


def test_supervised_ends_when_the_wait_is_stopped():
    stop = threading.Event()
    runs = []

    def body():
        runs.append(1)
        raise ValueError("again")

    def wait(_delay):
        stop.set()  # stopped during the backoff
        return True

    supervised(unique("stopwait"), body, stop, wait=wait)
    assert len(runs) == 1


def test_supervised_does_not_restart_an_error_raised_while_stopping(caplog):
    comp = unique("stopping")
    stop = threading.Event()
    waits = []

    def body():
        stop.set()
        raise OSError("closed under us")

    supervised(comp, body, stop, wait=lambda d: waits.append(d) or False)
    assert waits == [] and restarts(comp) == 0 and errors(comp, "OSError") == 1
    assert "while stopping" in warnings_of(caplog, comp)[0].getMessage()


def test_supervised_never_runs_when_already_stopped():
    stop = threading.Event()
    stop.set()
    supervised(unique("never"), lambda: pytest.fail("must not run"), stop)


def test_a_healthy_run_resets_the_backoff():
    clock = Clock()
    stop = threading.Event()
    waits = []
    durations = iter([0.0, 0.0, 0.0, 120.0, 0.0])

    def body():
        d = next(durations, None)
        if d is None:
            return
        clock.t += d
        raise RuntimeError("x")

    supervised(unique("healthy"), body, stop, backoff=Backoff(1.0, 100.0, healthy_after_s=60),
               wait=lambda d: waits.append(d) or False, clock=clock)
    assert waits == pytest.approx([1.0, 2.0, 4.0, 1.0, 2.0])


def test_stop_ends_a_long_backoff_at_once():
    """The real wait is stop.wait: setting stop ends a 1 h backoff immediately (no sleeping through it)."""
    stop = threading.Event()
    failed = threading.Event()

    def body():
        failed.set()
        raise RuntimeError("down")

    t = threading.Thread(target=supervised, args=(unique("prompt"), body, stop),
                         kwargs={"backoff": Backoff(3600.0, 3600.0)}, daemon=True)
    t.start()
    assert failed.wait(5)
    stop.set()
    t.join(5)
    assert not t.is_alive()


def test_base_exceptions_are_not_swallowed():
    with pytest.raises(KeyboardInterrupt):
        supervised(unique("base"), lambda: (_ for _ in ()).throw(KeyboardInterrupt()), threading.Event(),
                   wait=lambda d: False)


# ---- supervised_async ----------------------------------------------------------------------------------
def test_supervised_async_restarts_with_backoff_and_stops():
    comp = unique("task")
    runs, waits = [], []

    async def main():
        stop = asyncio.Event()

        async def body():
            runs.append(1)
            if len(runs) < 4:
                raise ConnectionError("broker away")

        async def sleep(delay):
            waits.append(delay)
            return False

        await supervised_async(comp, body, stop, backoff=Backoff(0.5, 1.0), sleep=sleep, clock=Clock())

    asyncio.run(main())
    assert len(runs) == 4
    assert waits == pytest.approx([0.5, 1.0, 1.0])
    assert errors(comp, "ConnectionError") == 3 and restarts(comp) == 3


def test_supervised_async_stop_event_ends_the_backoff_and_cancel_is_not_an_error():
    comp = unique("taskstop")

    async def main():
        stop = asyncio.Event()
        started = asyncio.Event()

        async def failing():
            started.set()
            raise RuntimeError("x")

        task = asyncio.create_task(supervised_async(comp, failing, stop, backoff=Backoff(3600.0, 3600.0)))
        await started.wait()
        stop.set()
        await asyncio.wait_for(task, 5)  # the 1 h backoff ended at once

        async def forever():
            await asyncio.Event().wait()

        task = asyncio.create_task(supervised_async(comp, forever, asyncio.Event()))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert errors(comp, "RuntimeError") == 1
    assert errors(comp, "CancelledError") == 0


# ---- swallowed / guard ---------------------------------------------------------------------------------
def test_swallowed_one_line_per_period_counts_every_one(caplog, fresh_throttle):
    caplog.set_level(logging.DEBUG)
    comp = unique("handler")
    for _ in range(5):
        swallowed(comp, ValueError(f"bad record from {SECRET_DSN}"), what="record handler")
    assert errors(comp, "ValueError") == 5
    warn = warnings_of(caplog, comp)
    assert len(warn) == 1
    assert warn[0].getMessage() == f"{comp}: record handler failed: ValueError: bad record from postgresql://app:***@db-east:5432/app"
    fresh_throttle.t += supervise.REPORT_EVERY_S
    swallowed(comp, ValueError("again"), what="record handler")
    warn = warnings_of(caplog, comp)
    assert len(warn) == 2 and "(+4 more since the last report)" in warn[1].getMessage()
    assert_one_line_each(warn)
    assert errors(comp, "ValueError") == 6
    tb = debugs_of(caplog, comp)
    assert len(tb) == 6 and all("Traceback" in r.getMessage() or "ValueError" in r.getMessage() for r in tb)
    assert all("s3cr3t" not in r.getMessage() for r in caplog.records)


def test_swallowed_below_warning_still_counts(caplog):
    caplog.set_level(logging.INFO)
    comp = unique("quiet")
    swallowed(comp, TimeoutError("close"), what="closing", level=logging.DEBUG)
    assert errors(comp, "TimeoutError") == 1
    assert not [r for r in caplog.records if comp in r.getMessage()]


def test_swallowed_keeps_a_multiline_message_to_its_first_line(caplog):
    comp = unique("multi")
    swallowed(comp, ValueError("1 validation error for Thing\nfield\n  Field required"))
    (w,) = warnings_of(caplog, comp)
    assert w.getMessage().endswith("ValueError: 1 validation error for Thing")


def test_guard_reports_instead_of_raising(caplog):
    comp = unique("guard")
    seen = []

    def handler(x):
        seen.append(x)
        raise KeyError(x)

    safe = guard(comp, handler, what="the handler")
    safe(1)
    safe(2)
    assert seen == [1, 2] and errors(comp, "KeyError") == 2
    assert len(warnings_of(caplog, comp)) == 1


def test_through_the_services_log_handler_warning_is_one_line_and_debug_has_the_redacted_traceback(capsys):
    """setup_logging's handler (RedactingFilter): what an operator sees on stderr."""
    from regionguard.core.log import setup_logging

    comp = unique("stderr")
    setup_logging("test", level="DEBUG")
    try:
        try:
            raise ConnectionError(f"cannot reach {SECRET_DSN}")
        except ConnectionError as exc:
            swallowed(comp, exc, what="the tail", logger=logging.getLogger("regionguard.test"))
        err = capsys.readouterr().err
    finally:
        logging.getLogger().handlers.clear()
        logging.getLogger().setLevel(logging.WARNING)
    assert "s3cr3t" not in err
    lines = err.splitlines()
    warning = [ln for ln in lines if " WARNING " in ln]
    assert len(warning) == 1 and "ConnectionError: cannot reach postgresql://app:***@db-east:5432/app" in warning[0]
    debug_at = next(i for i, ln in enumerate(lines) if " DEBUG " in ln)
    assert debug_at > lines.index(warning[0]) and "Traceback" in "\n".join(lines[debug_at:])
