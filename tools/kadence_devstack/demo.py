"""``make demo``: the whole job cycle on the local stack, with a live view of runs.

Starts NATS, S3 and the Kubernetes control plane, installs the CRDs, runs the operator and one
worker (``examples/app.py``) as child processes, uploads the one-shot Job's input object, applies
``examples/`` into the ``demo`` namespace and shows each run as it happens — Job, run id, state,
duration, output URI — until Ctrl-C (or ``--seconds``), then stops everything it started.

The live view (:func:`watch_runs`) and the input upload (:func:`seed_storage`) are shared with
``make demo-kind`` (:mod:`kadence_devstack.demo_kind`), which shows the same view of a kind cluster.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from kadence import jobstatus
from kadence_devstack import binaries
from kadence_devstack.procs import ManagedProcess
from kadence_devstack.stack import LocalStack

REPO = binaries.TOOLS_DIR.parent
NAMESPACE = "demo"
QUEUE = "reports"
INPUT_BUCKET, INPUT_KEY = "raw-data", "sales/2025-01-31.csv"
SAMPLE_CSV = (
    "region,product,units,price\nnorth,widget,12,2.50\nsouth,widget,7,2.50\nnorth,gadget,3,9.99\n"
)


def _kubectl(stack: LocalStack, *args: str, stdin: str | None = None) -> str:
    assert stack.kube is not None
    result = subprocess.run(
        [str(binaries.venv_binary("kubectl")), "--kubeconfig", str(stack.kube.kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def seed_storage(*, endpoint: str, access_key: str, secret_key: str) -> None:
    """Create the examples' buckets and upload the one-shot Job's input object (``host:port``,
    plain HTTP). ``make demo`` points it at the local S3, ``make demo-kind`` at a port-forward to
    the chart's MinIO."""
    from minio import Minio

    s3 = Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=False)
    for bucket in ("kadence-outputs", "reports", INPUT_BUCKET):
        if not s3.bucket_exists(bucket):
            s3.make_bucket(bucket)
    data = SAMPLE_CSV.encode()
    s3.put_object(INPUT_BUCKET, INPUT_KEY, io.BytesIO(data), len(data), content_type="text/csv")


@dataclass(frozen=True)
class RunRow:
    """One run as both views show it."""

    job: str
    run_id: str
    state: str
    scheduled: str
    duration: str
    outputs: tuple[str, ...]
    error: str

    @property
    def detail(self) -> str:
        return "\n".join(self.outputs) or self.error[:200]


def run_rows(jobs: list[dict[str, Any]]) -> list[RunRow]:
    """Every run of ``jobs``, newest slot first."""
    rows = [
        RunRow(
            job=job["metadata"]["name"],
            run_id=run["runId"],
            state=run["state"],
            scheduled=run.get("scheduledAt") or "",
            duration=jobstatus.run_duration(run),
            outputs=tuple(o["uri"] for o in run.get("output") or []),
            error=run.get("error") or "",
        )
        for job in jobs
        for run in (job.get("status") or {}).get("runs") or []
    ]
    rows.sort(key=lambda r: r.scheduled, reverse=True)
    return rows


def runs_table(jobs: list[dict[str, Any]], *, limit: int = 20) -> tuple[Table, int]:
    """The live view: newest runs of every Job first. Returns the table and how many runs have an
    output URI."""
    table = Table(title=f"Kadence runs in namespace {NAMESPACE!r} (Ctrl-C to stop)")
    table.add_column("Job / run", no_wrap=True)
    table.add_column("State", no_wrap=True)
    table.add_column("Slot / duration", no_wrap=True)
    table.add_column("Output (or error)", overflow="fold", ratio=1)
    with_output = 0
    for row in run_rows(jobs)[:limit]:
        with_output += bool(row.outputs)
        style = {"Succeeded": "green", "Failed": "red", "Running": "yellow"}.get(row.state, "")
        table.add_row(
            f"{row.job}\n[dim]{row.run_id}[/dim]",
            f"[{style}]{row.state}[/{style}]" if style else row.state,
            f"{row.scheduled[11:19]}\n{row.duration}",
            row.detail,
        )
    return table, with_output


class RunLog:
    """The view for output that is not a terminal (a pipe, a file, a CI log), where a live table
    cannot redraw: one line per run each time its state or output changes, oldest first."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._shown: dict[tuple[str, str], tuple[str, str]] = {}

    def update(self, jobs: list[dict[str, Any]]) -> int:
        """Print what changed since the last call; returns how many runs have an output URI."""
        rows = run_rows(jobs)
        for row in reversed(rows):
            key, seen = (row.job, row.run_id), (row.state, row.detail)
            if self._shown.get(key) == seen:
                continue
            self._shown[key] = seen
            detail = row.detail.replace("\n", " ")  # one line per change
            self.console.print(
                f"{row.scheduled[11:19] or '-':8}  {row.job}  {row.run_id}  {row.state}  "
                f"{row.duration}  {detail}".rstrip(),
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        return sum(bool(row.outputs) for row in rows)


@contextlib.contextmanager
def _processes(stack: LocalStack, workdir: Path) -> Iterator[list[ManagedProcess]]:
    env = {**os.environ, **stack.environment()}
    env |= {
        "KADENCE_OPERATOR_NAMESPACE": "default",
        "KADENCE_OPERATOR_ID": "demo-operator",
        "KADENCE_STATUS_INTERVAL": "1",
        "KADENCE_QUEUE_STATUS_INTERVAL": "2",
    }
    bin_dir = Path(sys.executable).parent
    operator = ManagedProcess(
        name="kadence-operator",
        argv=[str(bin_dir / "kadence-operator")],
        log_path=workdir / "logs" / "operator.log",
        env=env,
    )
    worker = ManagedProcess(
        name="kadence worker",
        argv=[
            str(bin_dir / "kadence"),
            "worker",
            "--queue",
            QUEUE,
            "--namespace",
            NAMESPACE,
            "--app",
            str(REPO / "examples" / "app.py") + ":app",
            "--concurrency",
            "4",
            "--metrics-port",
            "0",
        ],
        log_path=workdir / "logs" / "worker.log",
        env=env | {"KADENCE_NAMESPACE": NAMESPACE},
    )
    started: list[ManagedProcess] = []
    try:
        operator.start(ready=lambda: "shards: now" in operator.log_tail(200), timeout=60)
        started.append(operator)
        worker.launch()
        started.append(worker)
        yield started
    finally:
        for proc in reversed(started):
            proc.stop()


@dataclass(frozen=True)
class ViewEnd:
    """How the live view ended: the runs with an output URI in its last frame, and whether it was
    Ctrl-C (else ``seconds`` ran out)."""

    runs_with_output: int
    interrupted: bool


def watch_runs(
    *,
    kubeconfig: Path,
    console: Console,
    seconds: float | None,
    check: Callable[[], None] | None = None,
) -> ViewEnd:
    """The live view of ``make demo`` and ``make demo-kind``: the Jobs in :data:`NAMESPACE`, read
    through ``kubeconfig`` once a second, until Ctrl-C or ``seconds``. ``check`` runs each second
    too and raises to end the view (the local demo checks that its processes still run)."""
    from kubernetes import client, config

    new_client: Any = config.new_client_from_config
    api = new_client(config_file=str(kubeconfig))
    objects = client.CustomObjectsApi(api)
    deadline = None if seconds is None else time.monotonic() + seconds

    def jobs() -> list[dict[str, Any]]:
        listing: Any = objects.list_namespaced_custom_object(
            "kadence.io", "v1alpha1", NAMESPACE, "jobs"
        )
        items: list[dict[str, Any]] = listing["items"]
        return items

    with_output = 0
    with contextlib.ExitStack() as stack:
        refresh: Callable[[], int]
        if console.is_terminal:
            live = stack.enter_context(Live(console=console, refresh_per_second=2))

            def redraw() -> int:
                table, count = runs_table(jobs())
                live.update(table, refresh=True)
                return count

            refresh = redraw
        else:
            console.print(f"runs in namespace {NAMESPACE!r}, one line per change (Ctrl-C to stop)")
            run_log = RunLog(console)
            refresh = lambda: run_log.update(jobs())  # noqa: E731
        try:
            while deadline is None or time.monotonic() < deadline:
                with_output = refresh()
                if check is not None:
                    check()
                time.sleep(1)
        except KeyboardInterrupt:
            # Show the state at the moment of Ctrl-C, not the one a second before.
            with contextlib.suppress(Exception):
                with_output = refresh()
            return ViewEnd(with_output, interrupted=True)
    return ViewEnd(with_output, interrupted=False)


def run(*, workdir: Path, seconds: float | None, console: Console) -> int:
    """Run the demo; returns how many runs showed an output URI at the end."""
    stack = LocalStack(workdir)
    with_output = 0
    try:
        with console.status("starting NATS, S3 and the Kubernetes control plane…"):
            stack.start()
        assert stack.kube is not None
        assert stack.s3 is not None
        env_file = stack.write_env_file(workdir / "env")
        _kubectl(stack, "apply", "--server-side", "-f", str(REPO / "crds"))
        for crd in ("jobs.kadence.io", "queues.kadence.io"):
            _kubectl(stack, "wait", "--for=condition=Established", f"crd/{crd}", "--timeout=30s")
        _kubectl(stack, "create", "namespace", NAMESPACE)
        seed_storage(
            endpoint=stack.s3.endpoint,
            access_key=stack.s3.access_key,
            secret_key=stack.s3.secret_key,
        )
        console.print(f"[green]stack up[/green]; kubeconfig: {stack.kube.kubeconfig}")
        console.print(
            f"  export KUBECONFIG={stack.kube.kubeconfig}   # then: kubectl get kadence -A"
        )
        console.print(f"  source {env_file}   # every KADENCE_* variable of this stack")
        with _processes(stack, workdir) as procs:
            _kubectl(stack, "apply", "-n", NAMESPACE, "-f", str(REPO / "examples"))

            def check() -> None:
                for proc in procs:
                    if not proc.running:
                        raise RuntimeError(f"{proc.name} exited:\n{proc.log_tail(20)}")

            end = watch_runs(
                kubeconfig=stack.kube.kubeconfig, console=console, seconds=seconds, check=check
            )
            with_output = end.runs_with_output
            if end.interrupted:
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        console.print("stopping…")
    finally:
        stack.stop()
    console.print(json.dumps({"runs_with_output": with_output}))
    return with_output
