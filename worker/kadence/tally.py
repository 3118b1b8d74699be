"""The worker's account of its finished attempts: metrics, a log line each, a summary a minute.

Per attempt: the duration histogram and the outcome counter of ``(task, state)`` (their label
children looked up once, not per attempt), the retry counter, and a line at WARNING for an attempt
that failed or will be retried, at DEBUG for one that succeeded. Every ``interval`` seconds one
INFO line sums up the attempts since the last: a line per successful attempt would cost a busy
worker more CPU than short tasks do (docs/performance.md, section (d)).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from typing import Any

from kadence.metrics import WorkerMetrics
from kadence.outcomes import Outcome
from kadence.protocol import RunState

log = logging.getLogger("kadence.worker")


class Tally:
    """Counts and logs a worker's finished attempts (see the module)."""

    def __init__(
        self, metrics: WorkerMetrics, *, interval: float, in_flight: Callable[[], int]
    ) -> None:
        self.metrics = metrics
        self.interval = interval
        self._in_flight = in_flight
        #: Attempts finished since the last summary, by reported state.
        self._finished: collections.Counter[str] = collections.Counter()
        self._since = time.monotonic()
        self._children: dict[tuple[str, str], tuple[Any, Any]] = {}

    def attempt(self, task: str, *, run_id: str, attempt: int, outcome: Outcome) -> None:
        """Count and log one finished attempt of ``task``."""
        duration, counter = self._task_metrics(task, outcome.state)
        duration.observe(outcome.duration)
        counter.inc()
        if outcome.state is RunState.RETRYING:
            self.metrics.retries.labels(task).inc()
        self._finished[outcome.state] += 1
        log.log(
            logging.DEBUG if outcome.state is RunState.SUCCEEDED else logging.WARNING,
            "run %s attempt %d of %s: %s in %.2fs%s",
            run_id,
            attempt,
            task,
            outcome.state,
            outcome.duration,
            f" ({outcome.error_text})" if outcome.error else "",
        )

    def dead_end(self, task: str) -> None:
        """Count a message dead-lettered without an attempt (``task`` is "" if undecodable)."""
        self.metrics.outcomes.labels(task, RunState.DEAD_LETTERED.value).inc()

    async def run(self) -> None:
        """Log a summary every ``interval`` seconds (until cancelled)."""
        while True:
            await asyncio.sleep(self.interval)
            self.summarize()

    def summarize(self) -> None:
        """Log what the attempts finished since the last summary came to, if there were any."""
        finished, self._finished = self._finished, collections.Counter()
        now = time.monotonic()
        since, self._since = self._since, now
        if finished:
            log.info(
                "%d attempt(s) finished in the last %.0fs (%s); %d in flight",
                finished.total(),
                now - since,
                ", ".join(f"{n} {state}" for state, n in sorted(finished.items())),
                self._in_flight(),
            )

    def _task_metrics(self, task: str, state: RunState) -> tuple[Any, Any]:
        """The duration histogram and outcome counter of ``(task, state)``, looked up once."""
        key = (task, state.value)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.metrics.task_duration.labels(*key),
                self.metrics.outcomes.labels(*key),
            )
        return children


__all__ = ["Tally"]
