"""Read a Job's recent runs from its status (for ``kadence runs``).

With :mod:`kadence.leases`, one of the two SDK modules that talk to the Kubernetes API; it needs
only ``get`` on ``jobs.kadence.io`` in the Job's namespace.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from kubernetes import client, config
from rich.table import Table

GROUP, VERSION, PLURAL = "kadence.io", "v1alpha1", "jobs"


class JobNotFound(LookupError):
    pass


def fetch_job(*, namespace: str, name: str, kubeconfig: str | None) -> dict[str, Any]:
    """The Job object, read with the in-cluster identity or ``kubeconfig``."""
    api: Any
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        load: Any = config.load_incluster_config
        load()
        api = client.ApiClient()
    else:
        new_client: Any = config.new_client_from_config
        api = new_client(config_file=kubeconfig)
    try:
        body: Any = client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name
        )
    except client.exceptions.ApiException as error:
        if error.status == 404:
            raise JobNotFound(f"Job {namespace}/{name} not found") from None
        raise
    return dict(body)


def run_duration(run: dict[str, Any]) -> str:
    """``startedAt`` → ``finishedAt`` of a status run, as whole seconds (empty if unfinished)."""
    start, end = run.get("startedAt"), run.get("finishedAt")
    if not start or not end:
        return ""
    seconds = (
        datetime.fromisoformat(end.replace("Z", "+00:00"))
        - datetime.fromisoformat(start.replace("Z", "+00:00"))
    ).total_seconds()
    return f"{seconds:.0f}s"


def runs_table(job: dict[str, Any]) -> Table:
    """Newest runs first: run id, state, slot, duration, attempts, outputs (or the error)."""
    meta, status = job["metadata"], job.get("status") or {}
    table = Table(title=f"Runs of Job {meta['namespace']}/{meta['name']}")
    for column in ("Run", "State", "Scheduled", "Duration", "Attempts", "Output / error"):
        table.add_column(column, overflow="fold")
    for run in status.get("runs") or []:
        outputs = run.get("output") or []
        detail = "\n".join(f"{o['uri']} ({o.get('size', '?')} B)" for o in outputs)
        table.add_row(
            run["runId"],
            run["state"],
            run.get("scheduledAt") or "",
            run_duration(run),
            str(run.get("attempts", 0)),
            detail or (run.get("error") or ""),
        )
    return table
