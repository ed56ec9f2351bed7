"""RunningEnvironment.close: a teardown that fails is logged with its error, never silenced, and the loop still stops."""

from __future__ import annotations

import logging

import pytest

from researchrl import environment
from researchrl.environment import EnvConfig, RunningEnvironment
from researchrl.tools.base import Toolset


class BrokenTeardown:
    """An environment that opens fine and fails to close."""

    async def __aenter__(self) -> Toolset:
        return Toolset([])

    async def __aexit__(self, *exc: object) -> None:
        raise OSError("the sandbox socket was already gone")


def test_a_failed_close_is_logged_and_the_loop_still_stops(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(environment, "open_environment", lambda env, protocol: BrokenTeardown())
    running = RunningEnvironment(EnvConfig(), "deepresearcher")
    with caplog.at_level(logging.WARNING, logger="researchrl"):
        running.close()
    (record,) = [r for r in caplog.records if r.name == "researchrl"]
    assert "could not close" in record.getMessage() and record.exc_info is not None
    assert "the sandbox socket was already gone" in caplog.text  # the error itself, with its traceback
    assert running.loop.loop.is_closed() and not running.loop.thread.is_alive()
