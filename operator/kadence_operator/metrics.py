"""Prometheus metrics of the operator, served on ``KADENCE_METRICS_PORT`` (0 = off).

Collectors live in their own :class:`~prometheus_client.CollectorRegistry` (with the process
collector, so ``process_cpu_seconds_total`` and ``process_resident_memory_bytes`` are there too);
several operators in one process — as in tests — never collide. Labels are bounded: ``kind``,
``namespace``, ``trigger``, ``reason``; never a Job name.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)

#: Lag buckets from 1 ms to 30 s: a healthy scheduler publishes within milliseconds of the due
#: time; seconds mean it is overloaded or was failing over.
LAG_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.03,
    0.04,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class OperatorMetrics:
    """The collectors the scheduler, the status writers and the shard Leases update."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.status_patches = Counter(
            "kadence_operator_status_patches",
            "Status PATCH requests sent (conflict retries included), by kind and namespace.",
            ["kind", "namespace"],
            registry=self.registry,
        )
        self.status_conflicts = Counter(
            "kadence_operator_status_conflicts",
            "Status PATCHes refused with 409 Conflict (re-read and re-applied), by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.dispatches = Counter(
            "kadence_operator_runs_dispatched",
            "Run requests acknowledged by JetStream, by trigger.",
            ["trigger"],
            registry=self.registry,
        )
        self.fires = Counter(
            "kadence_operator_fires",
            "Job fires, by path: armed (the on-time run prepared a slot ahead and published as "
            "soon as due), staged (armed runs due at one instant, checked and encoded just "
            "before it and written together; KADENCE_DISPATCH_STAGE) or full (planned when due: "
            "first runs, catch-up, triggers, backfills, overlap decisions other than dispatch, "
            "changed specs or Queues).",
            ["path"],
            registry=self.registry,
        )
        self.dispatch_holds = Counter(
            "kadence_operator_dispatch_holds",
            "Times status writes and result folding waited for a burst of fires to go out "
            "(KADENCE_DISPATCH_QUIET, KADENCE_DISPATCH_BURST).",
            registry=self.registry,
        )
        self.duplicates = Counter(
            "kadence_operator_duplicate_publishes",
            "Run requests JetStream reported as duplicates (the slot was already enqueued).",
            registry=self.registry,
        )
        self.slots_not_run = Counter(
            "kadence_operator_slots_not_run",
            "Slots that did not run: skipped (overlap), missed (catch-up), buffered (BufferOne).",
            ["reason"],
            registry=self.registry,
        )
        self.cancels = Counter(
            "kadence_operator_cancels",
            "Cancel requests published for active runs (concurrencyPolicy Replace).",
            registry=self.registry,
        )
        self.dispatch_lag = Histogram(
            "kadence_operator_dispatch_lag_seconds",
            "From a scheduled slot's due time (slot + spread + jitter) to JetStream's ack.",
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )
        self.dispatch_lag_max = Gauge(
            "kadence_operator_dispatch_lag_max_seconds",
            "Largest dispatch lag seen since the operator started.",
            registry=self.registry,
        )
        self.shards_owned = Gauge(
            "kadence_operator_shards_owned",
            "Scheduler shards this replica holds.",
            registry=self.registry,
        )
        self.jobs = Gauge(
            "kadence_operator_jobs",
            "Valid Jobs known to the scheduler (all shards).",
            registry=self.registry,
        )
        self._max_lag = 0.0
        self._lock = threading.Lock()
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def observe_lag(self, seconds: float) -> None:
        self.dispatch_lag.observe(seconds)
        with self._lock:
            if seconds > self._max_lag:
                self._max_lag = seconds
                self.dispatch_lag_max.set(seconds)

    def track_jobs(self, count: Callable[[], int]) -> None:
        self.jobs.set_function(lambda: float(count()))

    def track_shards(self, count: Callable[[], int]) -> None:
        self.shards_owned.set_function(lambda: float(count()))

    def serve(self, port: int, *, addr: str = "0.0.0.0") -> None:
        """Serve ``/metrics`` on ``port`` in a background thread (no-op for port 0)."""
        if port == 0 or self._server is not None:
            return
        self._server, self._thread = start_http_server(port, addr=addr, registry=self.registry)

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
