"""Supervision: backoff arithmetic, Health transitions, and which failures restart a loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from node.errors import ConfigError, NodeError, RecordRejected, TransportError
from node.supervisor import Backoff, Health, Supervisor

WAIT_S = 5.0


class ScriptedLoop:
    """A loop that raises the given errors on its first runs, then works until asked to stop."""

    def __init__(
        self, health: Health, *failures: BaseException | None, name: str = "local"
    ) -> None:
        self.name = name
        self.runs = 0
        self._health = health
        self._failures = list(failures)
        self._stop = asyncio.Event()

    def request_stop(self) -> None:
        """Make the working run return."""
        self._stop.set()

    async def run(self) -> None:
        """Fail as scripted (None: return at once, unasked), else mark up and wait for stop."""
        self.runs += 1
        if self._failures:
            failure = self._failures.pop(0)
            if failure is None:
                return
            raise failure
        self._health.up(self.name)
        await self._stop.wait()


class Watched:
    """A Health whose every transition is recorded and can be awaited."""

    def __init__(self) -> None:
        self.health = Health()
        self.transitions: list[tuple[bool, str]] = []
        self._changed = asyncio.Event()
        self.health.watch(self._record)

    def _record(self, name: str, state: object) -> None:
        self.transitions.append((self.health.is_up(name), self.health.snapshot()[name].reason))
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds after some transition (bounded)."""
        async with asyncio.timeout(WAIT_S):
            while not predicate():
                await self._changed.wait()


def supervisor(health: Health, stopping: asyncio.Event, backoff_s: float = 0.01) -> Supervisor:
    """A supervisor with a fast backoff and an rng that always takes the whole step."""
    return Supervisor(
        health, stopping, backoff_s=backoff_s, max_backoff_s=max(0.04, backoff_s),
        log=structlog.get_logger("test"), rng=lambda: 1.0,
    )  # fmt: skip


def test_backoff_doubles_up_to_the_cap() -> None:
    """Each delay doubles the one before until the cap, then stays there."""
    backoff = Backoff(1.0, 10.0, rng=lambda: 1.0)
    assert [backoff.next_delay() for _ in range(7)] == [1, 2, 4, 8, 10, 10, 10]


def test_backoff_reset_starts_again_from_base() -> None:
    """After reset the next delay is the base again."""
    backoff = Backoff(0.5, 60.0, rng=lambda: 1.0)
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_backoff_jitter_lowest_is_half_the_step() -> None:
    """An rng of 0 gives half the step, capped or not."""
    backoff = Backoff(2.0, 5.0, rng=lambda: 0.0)
    assert [backoff.next_delay() for _ in range(4)] == [1.0, 2.0, 2.5, 2.5]


@given(
    base=st.floats(0.001, 10.0),
    cap=st.floats(0.001, 100.0),
    draws=st.lists(st.floats(0.0, 1.0, exclude_max=True), min_size=1, max_size=40),
)
def test_backoff_delay_stays_within_half_and_whole_step(
    base: float, cap: float, draws: list[float]
) -> None:
    """Every jittered delay lies between half its step and its step, the step min(cap, base*2**n)."""
    rolls = iter(draws)
    backoff = Backoff(base, cap, rng=lambda: next(rolls))
    for n in range(len(draws)):
        step = min(cap, base * 2**n)
        assert step * 0.5 <= backoff.next_delay() <= step


def test_health_keeps_one_line_of_reason_and_counts_repeats() -> None:
    """A reason is cut to its first line; the same reason again counts a retry without a transition."""
    watched = Watched()
    health = watched.health
    health.register("local")
    health.down("local", "broker gone\ntraceback follows")
    health.down("local", "broker gone")
    state = health.snapshot()["local"]
    assert (state.up, state.reason, state.retries) == (False, "broker gone", 2)
    assert watched.transitions == [(False, "starting"), (False, "broker gone")]
    assert not health.ready
    health.up("local")
    assert health.ready


def test_health_uses_the_injected_clock() -> None:
    """A state change is stamped with the injected clock's time."""
    now = [100.0]
    health = Health(clock=lambda: now[0])
    health.register("local")
    now[0] = 160.0
    health.down("local", "broker gone")
    assert health.snapshot()["local"].since == 160.0


async def test_retriable_failure_marks_the_loop_down_and_restarts_it() -> None:
    """A TransportError marks the loop down with its message, then the restarted loop is up."""
    watched = Watched()
    stopping = asyncio.Event()
    loop = ScriptedLoop(
        watched.health, TransportError("parent unreachable"), TransportError("parent unreachable")
    )
    running = asyncio.ensure_future(supervisor(watched.health, stopping).keep_running(loop))

    await watched.wait(lambda: watched.health.is_up("local"))
    assert watched.transitions == [(False, "starting"), (False, "parent unreachable"), (True, "")]
    assert (loop.runs, watched.health.snapshot()["local"].retries) == (3, 2)
    stopping.set()
    loop.request_stop()
    await asyncio.wait_for(running, WAIT_S)


async def test_a_cancellation_escaping_the_client_is_retried_not_taken_for_a_stop() -> None:
    """A CancelledError raised inside the loop (aiokafka lets some escape) restarts the loop."""
    watched = Watched()
    stopping = asyncio.Event()
    loop = ScriptedLoop(watched.health, asyncio.CancelledError())
    running = asyncio.ensure_future(supervisor(watched.health, stopping).keep_running(loop))

    await watched.wait(lambda: watched.health.is_up("local"))
    assert loop.runs == 2
    assert "cancelled from inside the client" in watched.transitions[1][1]
    stopping.set()
    loop.request_stop()
    await asyncio.wait_for(running, WAIT_S)


async def test_cancelling_the_supervised_task_still_stops_it() -> None:
    """A real cancellation of the supervisor's task (a hard stop) is not swallowed."""
    watched = Watched()
    loop = ScriptedLoop(watched.health)
    running = asyncio.ensure_future(supervisor(watched.health, asyncio.Event()).keep_running(loop))
    await watched.wait(lambda: watched.health.is_up("local"))
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(running, WAIT_S)


async def test_restarts_back_off_exponentially() -> None:
    """Between restarts the supervisor waits base, twice base, ... up to the cap."""
    watched = Watched()
    stopping = asyncio.Event()
    loop = ScriptedLoop(watched.health, *[TransportError("down")] * 4)
    with capture_logs() as logs:
        running = asyncio.ensure_future(supervisor(watched.health, stopping).keep_running(loop))
        await watched.wait(lambda: watched.health.is_up("local"))
    assert [e["retry_in_s"] for e in logs if e["event"] == "loop_failed"] == [
        0.01,
        0.02,
        0.04,
        0.04,
    ]
    stopping.set()
    loop.request_stop()
    await asyncio.wait_for(running, WAIT_S)


async def test_loop_returning_unasked_is_restarted() -> None:
    """A loop that returns while the node runs is marked down and run again."""
    watched = Watched()
    stopping = asyncio.Event()
    loop = ScriptedLoop(watched.health, None)
    running = asyncio.ensure_future(supervisor(watched.health, stopping).keep_running(loop))

    await watched.wait(lambda: watched.health.is_up("local"))
    assert (False, "returned without being asked to stop") in watched.transitions
    stopping.set()
    loop.request_stop()
    await asyncio.wait_for(running, WAIT_S)


@pytest.mark.parametrize(
    "error",
    [
        ConfigError("flow.max_batch", "must be positive"),
        ValueError("a bug"),
        RecordRejected("too large"),
        NodeError("unnamed"),
    ],
    ids=["config", "bug", "record-rejected", "plain-node-error"],
)
async def test_non_retriable_failure_propagates(error: Exception) -> None:
    """Bad configuration, a bug or any non-retriable NodeError ends keep_running with that error."""
    watched = Watched()
    loop = ScriptedLoop(watched.health, error)
    with pytest.raises(type(error)) as raised:
        await asyncio.wait_for(
            supervisor(watched.health, asyncio.Event()).keep_running(loop), WAIT_S
        )
    assert raised.value is error
    assert loop.runs == 1


async def test_stop_during_backoff_returns_promptly() -> None:
    """Setting stopping while the supervisor backs off for a minute ends keep_running at once."""
    watched = Watched()
    stopping = asyncio.Event()
    loop = ScriptedLoop(watched.health, TransportError("down"))
    running = asyncio.ensure_future(
        supervisor(watched.health, stopping, backoff_s=60.0).keep_running(loop)
    )
    await watched.wait(lambda: (False, "down") in watched.transitions)

    stopping.set()
    await asyncio.wait_for(running, 1.0)
    assert loop.runs == 1


async def test_stopped_supervisor_does_not_start_the_loop() -> None:
    """keep_running with stopping already set returns without running the loop."""
    watched = Watched()
    stopping = asyncio.Event()
    stopping.set()
    loop = ScriptedLoop(watched.health)
    await asyncio.wait_for(supervisor(watched.health, stopping).keep_running(loop), WAIT_S)
    assert loop.runs == 0
