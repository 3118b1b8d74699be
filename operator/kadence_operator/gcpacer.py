"""The operator's garbage collections, moved out of its bursts of fires (``KADENCE_GC_PACING``).

CPython collects a generation whenever enough objects were allocated since the last collection
-- in the operator, often in the middle of publishing a burst of a thousand runs, each of which
then waited for it (docs/benchmarks.md). While :class:`GcPacer` runs, automatic collection is
off and every :data:`TICK` seconds the pacer collects the generation CPython would have
collected (:func:`~kadence_operator.scheduling.gcpace.due_generation`) if the scheduler is
quiet long enough for it, or at once past a bound
(:func:`~kadence_operator.scheduling.gcpace.decide`). Memory stays bounded; collections move by
a fraction of a second.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import logging
import time
from collections.abc import Callable, Sequence

from kadence_operator.metrics import OperatorMetrics
from kadence_operator.scheduling import gcpace

logger = logging.getLogger(__name__)

#: Seconds between two looks at the collector's counts, and while the young generation's
#: count is below half its threshold (an idle operator: fewer wake-ups).
TICK = 0.025
IDLE_TICK = 0.25
#: Collections remembered per generation; the longest of them is the next one's estimate.
RECENT = 8
#: A collection this long is logged (INFO).
SLOW = 0.1

#: Pacers running in this process (automatic collection is off while there is one).
_running = 0
_was_enabled = True


def _old_generation_size() -> int:
    return len(gc.get_objects(generation=2))


class GcPacer:
    """Collects garbage when ``quiet_for(seconds)`` says the scheduler can spare the pause.

    The collector's functions are parameters so that tests can watch the decisions.
    """

    def __init__(
        self,
        quiet_for: Callable[[float], float],
        *,
        metrics: OperatorMetrics | None = None,
        tick: float = TICK,
        idle_tick: float = IDLE_TICK,
        collect: Callable[[int], int] = gc.collect,
        get_count: Callable[[], Sequence[int]] = gc.get_count,
        get_threshold: Callable[[], Sequence[int]] = gc.get_threshold,
        old_size: Callable[[], int] = _old_generation_size,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._quiet_for = quiet_for
        self._metrics = metrics
        self._tick = tick
        self._idle_tick = idle_tick
        self._collect = collect
        self._get_count = get_count
        self._get_threshold = get_threshold
        self._old_size = old_size
        self._clock = clock
        self._recent = [collections.deque[float](maxlen=RECENT) for _ in gcpace.PRIOR]
        #: Objects in the oldest generation after its last collection (CPython's
        #: long_lived_total), and the oldest generation's count when its size was last read.
        self._long_lived = old_size()
        self._pending: tuple[int, int] | None = None
        #: The young generation's highest count since its last collection. The count is
        #: allocations minus deallocations: high in a burst, lower again in the quiet after it,
        #: where CPython would have collected when it passed its threshold.
        self._peak = 0

    def expected(self, generation: int) -> float:
        """How long a collection of ``generation`` is likely to take, seconds."""
        recent = self._recent[generation]
        return max(recent) if recent else gcpace.PRIOR[generation]

    def next_tick(self) -> float:
        """Seconds until the next look: :data:`IDLE_TICK` while the young generation is far
        from due (its count, highest since its collection, below half its threshold)."""
        young = self._get_threshold()[0]
        return self._idle_tick if 2 * max(self._peak, self._get_count()[0]) < young else self._tick

    def step(self) -> gcpace.Reason | None:
        """Collect now if it is time (the reason), else None."""
        counts, thresholds = self._get_count(), self._get_threshold()
        oldest = len(thresholds) - 1
        pending = 0
        if counts[oldest] > thresholds[oldest]:
            # Reading the oldest generation's size lists it: once per change of its count.
            if self._pending is None or self._pending[0] != counts[oldest]:
                self._pending = (counts[oldest], self._old_size() - self._long_lived)
            pending = self._pending[1]
        self._peak = max(self._peak, counts[0])
        generation = gcpace.due_generation(
            (self._peak, *counts[1:]), thresholds, pending=pending, total=self._long_lived
        )
        if generation is None:
            return None
        expected = self.expected(generation)
        quiet = self._quiet_for(expected * gcpace.MARGIN)
        reason = gcpace.decide(generation, counts, thresholds, expected=expected, quiet=quiet)
        if reason is None:
            return None
        started = self._clock()
        self._collect(generation)
        took = self._clock() - started
        self._recent[generation].append(took)
        self._peak = 0
        if generation == oldest:
            self._long_lived = self._old_size()
            self._pending = None
        if self._metrics is not None:
            self._metrics.gc_collections.labels(str(generation), reason.value).inc()
            self._metrics.gc_pause.observe(took)
        log = logger.info if took > SLOW else logger.debug
        log(
            "collected generation %d (%s) in %.1f ms; the scheduler was quiet for %.0f ms",
            generation,
            reason.value,
            took * 1000,
            quiet * 1000,
        )
        return reason

    async def run(self, stop: asyncio.Event) -> None:
        """Pace the collections until ``stop`` is set; automatic collection is back after."""
        global _running, _was_enabled
        if _running == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _running += 1
        try:
            while not stop.is_set():
                # A plain sleep: wait_for(stop.wait()) would make a task 40 times a second.
                await asyncio.sleep(self.next_tick())
                self.step()
        finally:
            _running -= 1
            if _running == 0 and _was_enabled:
                gc.enable()
