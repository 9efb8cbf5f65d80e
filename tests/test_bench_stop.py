"""bench/compare.py stops what it started when it is told to stop (SIGTERM, SIGHUP), not only on Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from bench.compare import stoppable


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_unwinds_the_run_and_exits_with_its_number(signum):
    cleaned: list[str] = []

    async def run() -> dict:
        try:
            asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signum)
            await asyncio.sleep(30)
            return {}
        finally:
            await asyncio.sleep(0)  # a cleanup that awaits (stopping a server) still runs
            cleaned.append("servers stopped")

    # Should stoppable not take the signal, this handler does (the test fails, the test run lives on).
    previous = signal.signal(signum, lambda *_: cleaned.append("not taken"))
    try:
        with pytest.raises(SystemExit) as exited:
            asyncio.run(stoppable(run()))
        assert exited.value.code == 128 + signum
        assert cleaned == ["servers stopped"]
        assert signal.getsignal(signum) == signal.SIG_DFL  # its handler is removed once the run ends
    finally:
        signal.signal(signum, previous)


def test_a_run_that_ends_returns_its_result_and_leaves_no_handler():
    async def run() -> dict:
        return {"rounds": []}

    assert asyncio.run(stoppable(run())) == {"rounds": []}
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
