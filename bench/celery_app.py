"""The Celery side of the worker benchmark: a no-op task on a Redis broker.

The broker is ``$KADENCE_BENCH_REDIS_URL``. Results are off (``task_ignore_result``), so a task
costs Celery exactly its broker round trips. ``KADENCE_BENCH_ACKS_LATE=1`` acknowledges after
the task (Kadence's at-least-once), else Celery's default (before the task runs).

When ``$KADENCE_BENCH_DONE_FILE`` is set (in the worker), the ``task_prerun``/``task_postrun``
signals note the time the first task started and count finished tasks in shared memory (so it
works for the threads and the prefork pool alike); when ``$KADENCE_BENCH_EXPECT`` tasks have
finished, the last one writes ``{"first": t0, "last": t1, "done": n}`` (``time.time()``) to the
file. That costs a lock and two additions per task, and no broker traffic.

    KADENCE_BENCH_REDIS_URL=redis://127.0.0.1:6379/0 \
        .venv/bin/celery -A bench.celery_app worker --pool threads --concurrency 16
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import task_postrun, task_prerun

QUEUE = "bench"
BROKER_ENV = "KADENCE_BENCH_REDIS_URL"
DONE_FILE_ENV = "KADENCE_BENCH_DONE_FILE"
EXPECT_ENV = "KADENCE_BENCH_EXPECT"
ACKS_LATE_ENV = "KADENCE_BENCH_ACKS_LATE"

app = Celery("kadence_bench", broker=os.environ.get(BROKER_ENV, "redis://127.0.0.1:6379/0"))
app.conf.update(
    task_ignore_result=True,
    task_default_queue=QUEUE,
    task_acks_late=os.environ.get(ACKS_LATE_ENV) == "1",
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=True,
)


@app.task(name="bench.noop")  # type: ignore[untyped-decorator]  # Celery has no types
def noop() -> None:
    """Return at once."""
    return None


class _Tracker:
    """First start and finished count, in shared memory created before the pool forks."""

    def __init__(self, done_file: Path, expect: int) -> None:
        self.done_file = done_file
        self.expect = expect
        self.lock = multiprocessing.Lock()
        self.first = multiprocessing.Value("d", 0.0, lock=False)
        self.done = multiprocessing.Value("q", 0, lock=False)

    def started(self, **_: Any) -> None:
        if self.first.value == 0.0:
            with self.lock:
                if self.first.value == 0.0:
                    self.first.value = time.time()

    def finished(self, **_: Any) -> None:
        with self.lock:
            self.done.value += 1
            done = self.done.value
        if done == self.expect:
            record = {"first": self.first.value, "last": time.time(), "done": done}
            partial = self.done_file.with_suffix(".part")
            partial.write_text(json.dumps(record))
            partial.rename(self.done_file)


_tracker: _Tracker | None = None
if os.environ.get(DONE_FILE_ENV):
    _tracker = _Tracker(Path(os.environ[DONE_FILE_ENV]), int(os.environ.get(EXPECT_ENV, "0")))
    task_prerun.connect(_tracker.started, weak=False)
    task_postrun.connect(_tracker.finished, weak=False)
