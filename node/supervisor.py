"""Supervision: every loop of the node runs under one policy, and says truthfully how it is.

``Health`` holds each loop's state (up, or down with a reason and since when); readiness is every
loop up. ``Supervisor.keep_running`` runs one loop until the node stops: a retriable error (the
``retriable`` attribute of ``node.errors``) marks the loop down with the error as its reason, backs
off (exponential, capped, jittered) and runs it again, for ever; anything else (a configuration
error, a bug) propagates and stops the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

from node.errors import NodeError
from node.ops.events import LoopFailed, emit


class Loop(Protocol):
    """A long-running loop: ``run`` returns once ``request_stop`` was called, raises on failure."""

    name: str

    def request_stop(self) -> None:
        """Ask ``run`` to finish what it has under way and return."""

    async def run(self) -> None:
        """Work until asked to stop; raise NodeError (retriable or not) on failure."""


@dataclass(slots=True)
class LoopState:
    """One loop's state as readiness and the operator see it."""

    up: bool
    reason: str
    since: float
    retries: int = 0


class Health:
    """The state of every supervised loop; a loop is down until it says it is up."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._states: dict[str, LoopState] = {}
        self._watchers: list[Callable[[str, LoopState], None]] = []

    def watch(self, watcher: Callable[[str, LoopState], None]) -> None:
        """Call ``watcher(name, state)`` on every change (metrics, logs)."""
        self._watchers.append(watcher)

    def register(self, name: str) -> None:
        """Add a loop, down until it starts."""
        self._set(name, LoopState(up=False, reason="starting", since=self._clock()))

    def up(self, name: str) -> None:
        """Mark ``name`` as working."""
        state = self._states.get(name)
        if state is None or not state.up:
            retries = state.retries if state else 0
            self._set(name, LoopState(up=True, reason="", since=self._clock(), retries=retries))

    def down(self, name: str, reason: str) -> None:
        """Mark ``name`` as failing for ``reason`` (kept to one line)."""
        state = self._states.get(name)
        reason = reason.splitlines()[0][:500] if reason else "unknown"
        if state is not None and not state.up and state.reason == reason:
            state.retries += 1
            return
        retries = state.retries + 1 if state else 1
        self._set(name, LoopState(up=False, reason=reason, since=self._clock(), retries=retries))

    def _set(self, name: str, state: LoopState) -> None:
        self._states[name] = state
        for watcher in self._watchers:
            watcher(name, state)

    @property
    def ready(self) -> bool:
        """Every loop is up."""
        return bool(self._states) and all(s.up for s in self._states.values())

    def snapshot(self) -> dict[str, LoopState]:
        """Return a copy of every loop's state."""
        return {
            name: LoopState(s.up, s.reason, s.since, s.retries) for name, s in self._states.items()
        }

    def is_up(self, name: str) -> bool:
        """Tell whether ``name`` is up."""
        state = self._states.get(name)
        return state is not None and state.up


class Backoff:
    """Exponential backoff, capped, with jitter: ``base * 2**n`` up to ``cap``, times 0.5-1."""

    def __init__(
        self, base_s: float, cap_s: float, rng: Callable[[], float] = random.random
    ) -> None:
        self._base = base_s
        self._cap = cap_s
        self._rng = rng
        self._failures = 0

    def next_delay(self) -> float:
        """Return the wait before the next attempt; each call doubles the next, up to the cap."""
        delay = min(self._cap, self._base * 2 ** min(self._failures, 30))
        self._failures += 1
        return float(delay * (0.5 + self._rng() / 2))

    def reset(self) -> None:
        """Start again from ``base`` (after a success)."""
        self._failures = 0


class Supervisor:
    """Runs loops for as long as the node runs, restarting retriable failures."""

    def __init__(
        self,
        health: Health,
        stopping: asyncio.Event,
        *,
        backoff_s: float,
        max_backoff_s: float,
        log: structlog.typing.FilteringBoundLogger,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._health = health
        self._stopping = stopping
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._log = log
        self._rng = rng

    async def keep_running(self, loop: Loop) -> None:
        """Run ``loop`` until the node stops; raise only what is not retriable."""
        self._health.register(loop.name)
        backoff = Backoff(self._backoff_s, self._max_backoff_s, self._rng)
        while not self._stopping.is_set():
            began = time.monotonic()
            try:
                await loop.run()
            except NodeError as error:
                if not error.retriable:
                    raise
                reason = str(error) or type(error).__name__
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # the node is cutting this loop (hard stop)
                reason = "a client operation was cancelled from inside the client library"
            else:
                if self._stopping.is_set():
                    return
                reason = "returned without being asked to stop"
            if time.monotonic() - began > self._max_backoff_s:
                backoff.reset()  # it ran well for a while: this is a new failure, not a streak
            delay = backoff.next_delay()
            self._health.down(loop.name, reason)
            emit(self._log, LoopFailed(loop.name, reason, round(delay, 2)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
