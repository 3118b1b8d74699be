"""Prometheus metrics of a worker, served on ``--metrics-port`` (default 9090, 0 turns it off).

Each :class:`WorkerMetrics` registers its collectors in its own
:class:`~prometheus_client.CollectorRegistry` (a fresh one unless given), so several workers in
one process — as in tests — never collide on duplicate registration.
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

#: Buckets from 10 ms to an hour: tasks range from quick lookups to long reports.
_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class WorkerMetrics:
    """The collectors the runtime updates."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.task_duration = Histogram(
            "kadence_task_duration_seconds",
            "Duration of task attempts, by task and outcome.",
            ["task", "state"],
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.outcomes = Counter(
            "kadence_task_outcomes",
            "Attempts finished, by task and reported state.",
            ["task", "state"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "kadence_tasks_in_flight",
            "Messages being worked on by this worker.",
            registry=self.registry,
        )
        self.retries = Counter(
            "kadence_task_retries",
            "Attempts that failed and will be retried.",
            ["task"],
            registry=self.registry,
        )
        self.lease_waits = Counter(
            "kadence_lease_waits",
            "Runs put back because another attempt of the same Job held its Lease.",
            ["task"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "kadence_dead_letters",
            "Messages this worker dead-lettered, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.report_batch_size = Histogram(
            "kadence_result_report_batch_size",
            "Results per message sent to the results stream (runs that ended together).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 100),
            registry=self.registry,
        )
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

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
