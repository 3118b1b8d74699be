"""The Kadence App of the worker throughput benchmark: tasks that do nothing.

Served by ``kadence worker --app bench._worker_app:app`` (run from the repository root).
``bench.noop`` is a plain function, so the worker runs it in its thread pool of ``concurrency``
threads, as Celery's ``threads`` pool runs its task; ``bench.anoop`` runs on the event loop.
"""

from __future__ import annotations

import kadence

app = kadence.App("bench")


@app.task("bench.noop")
def noop() -> None:
    """Return at once (a sync task: it runs in the worker's thread pool)."""
    return None


@app.task("bench.anoop")
async def anoop() -> None:
    """Return at once (an async task: it runs on the worker's event loop)."""
    return None
