"""The ``kadence`` command: run a worker, and publish, consume or enqueue by hand.

::

    kadence worker --queue reports --app myproject.tasks:app --concurrency 4 -n analytics
    kadence enqueue reports.build '{"day": "2024-05-01"}' --queue reports --wait
    kadence publish reports '{"any": "bytes"}' --key customer-42
    kadence consume reports --count 10
    kadence ensure-queue reports --partitions 4     # for development; the operator does this

Connection settings come from ``KADENCE_*`` environment variables (see :mod:`kadence.config`).
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from kadence import loops, streams
from kadence.app import App
from kadence.client import KadenceClient
from kadence.config import LOG_FORMAT, Settings
from kadence.metrics import WorkerMetrics
from kadence.processes import KILL_GRACE
from kadence.protocol import Backoff, RetryPolicy
from kadence.runtime import RUNNING_REPORT_DELAY, Worker
from kadence.storage import S3Storage

cli = typer.Typer(
    name="kadence",
    help="Kadence workers and queue tools.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold credentials
)
console = Console(stderr=True)
out = Console()
T = TypeVar("T")

Namespace = Annotated[
    str | None,
    typer.Option("--namespace", "-n", help="Namespace of the Queue (default $KADENCE_NAMESPACE)."),
]


def load_app(reference: str) -> App:
    """The :class:`App` at ``module:attribute`` (or ``path/to/file.py:attribute``)."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise typer.BadParameter(
            f"expected module:attribute, got {reference!r}", param_hint="--app"
        )
    if module_name.endswith(".py") or "/" in module_name:
        path = Path(module_name).resolve()
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise typer.BadParameter(f"cannot load {path}", param_hint="--app")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
    else:
        # Like `python -m`: modules in the current directory are importable.
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        module = importlib.import_module(module_name)
    target: Any = module
    for part in attribute.split("."):
        target = getattr(target, part)
    if not isinstance(target, App):
        raise typer.BadParameter(
            f"{reference} is a {type(target).__name__}, not a kadence.App", param_hint="--app"
        )
    return target


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format=LOG_FORMAT,
        stream=sys.stderr,
    )


def _run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on the event loop ``KADENCE_EVENT_LOOP`` chooses (uvloop by default)."""
    try:
        return loops.run(main)
    except loops.EventLoopError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None


def _settings(namespace: str | None) -> Settings:
    return Settings.from_env(namespace=namespace)


def _leases(settings: Settings) -> Any:
    try:
        from kadence.leases import LeaseClient
    except ImportError:
        logging.getLogger("kadence").warning(
            "the kubernetes package is not installed: runs that need a Job Lease cannot run "
            "here (pip install 'kadence[leases]')"
        )
        return None
    return LeaseClient.from_settings(settings)


@cli.command()
def worker(
    queue: Annotated[str, typer.Option("--queue", "-q", help="The Queue to serve.")],
    app: Annotated[str, typer.Option("--app", "-a", help="The App, as module:attribute.")],
    namespace: Namespace = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", min=1, help="Tasks run at once.")
    ] = 1,
    metrics_port: Annotated[
        int,
        typer.Option(
            envvar="KADENCE_METRICS_PORT", help="Port of the Prometheus /metrics endpoint (0: off)."
        ),
    ] = 9090,
    grace_period: Annotated[
        float,
        typer.Option(
            envvar="KADENCE_GRACE_PERIOD", help="Seconds running tasks get to finish on SIGTERM."
        ),
    ] = 30.0,
    lease_duration: Annotated[
        int, typer.Option(min=1, help="Seconds a Job Lease lasts without renewal.")
    ] = 15,
    running_report_delay: Annotated[
        float,
        typer.Option(
            min=0,
            envvar="KADENCE_RUNNING_REPORT_DELAY",
            help="Report Running for attempts still going after this many seconds (0: all).",
        ),
    ] = RUNNING_REPORT_DELAY,
    kill_grace: Annotated[
        float,
        typer.Option(
            min=0,
            envvar="KADENCE_KILL_GRACE",
            help="Seconds between SIGTERM and SIGKILL for the process of an isolation='process' "
            "task whose attempt ended early (timeout, lost Lease, Replace, shutdown).",
        ),
    ] = KILL_GRACE,
    name: Annotated[
        str | None, typer.Option(help="Worker identity (default $KADENCE_WORKER_NAME or host-pid).")
    ] = None,
    log_level: Annotated[
        str,
        typer.Option(
            envvar=["KADENCE_LOG_LEVEL", "LOG_LEVEL"], help="DEBUG, INFO, WARNING or ERROR."
        ),
    ] = "INFO",
) -> None:
    """Run tasks from a Queue until SIGTERM."""
    _logging(log_level)
    settings = Settings.from_env(namespace=namespace, worker_name=name)
    task_app = load_app(app)

    async def serve() -> int:
        client = await KadenceClient.connect(settings)
        metrics = WorkerMetrics()
        metrics.serve(metrics_port)
        runner = Worker(
            task_app,
            client,
            queue=queue,
            concurrency=concurrency,
            storage=S3Storage.from_settings(settings),
            output_bucket=settings.output_bucket,
            leases=_leases(settings),
            lease_duration=lease_duration,
            metrics=metrics,
            name=settings.worker_name,
            grace_period=grace_period,
            running_report_delay=running_report_delay,
            kill_grace=kill_grace,
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, runner.stop)
        loops.tune_gc()  # start-up is over
        try:
            await runner.run()
        finally:
            metrics.close()
            await client.close()
        return runner.abandoned

    abandoned = _run(serve())
    if abandoned:
        # Sync tasks that ignored cancellation still run in pool threads, which the interpreter
        # would wait for at exit; their messages are already put back, so leave now.
        logging.getLogger("kadence").warning(
            "exiting with %d task thread(s) still running", abandoned
        )
        sys.stderr.flush()
        os._exit(0)


@cli.command()
def publish(
    queue: Annotated[str, typer.Argument(help="The Queue.")],
    data: Annotated[str, typer.Argument(help="Message body; '-' reads standard input.")],
    namespace: Namespace = None,
    key: Annotated[str | None, typer.Option(help="Partition key.")] = None,
    msg_id: Annotated[str | None, typer.Option(help="Nats-Msg-Id (de-duplication).")] = None,
    partition: Annotated[int | None, typer.Option(help="Partition (overrides --key).")] = None,
) -> None:
    """Publish one raw message to a Queue and print where JetStream stored it."""
    body = sys.stdin.buffer.read() if data == "-" else data.encode()

    async def go() -> None:
        async with await KadenceClient.connect(_settings(namespace)) as client:
            ack = await client.publish(queue, body, key=key, msg_id=msg_id, partition=partition)
            out.print_json(
                data={"stream": ack.stream, "seq": ack.seq, "duplicate": bool(ack.duplicate)}
            )

    _run(go())


@cli.command()
def consume(
    queue: Annotated[str, typer.Argument(help="The Queue.")],
    namespace: Namespace = None,
    count: Annotated[int, typer.Option(min=1, help="Stop after this many messages.")] = 1,
    ack: Annotated[
        bool, typer.Option("--ack/--no-ack", help="Acknowledge (remove) or put back each one.")
    ] = True,
    wait: Annotated[float, typer.Option(help="Give up after this many idle seconds.")] = 10.0,
) -> None:
    """Take messages from a Queue and print them as JSON lines."""

    async def go() -> None:
        async with await KadenceClient.connect(_settings(namespace)) as client:
            seen = 0
            # Short long-polls: closing waits for the one in flight (see QueueConsumer.aclose).
            stream = client.consume(queue, batch=min(count, 64), fetch_timeout=1.0)
            try:
                while seen < count:
                    message = await asyncio.wait_for(anext(stream), wait)
                    line = {
                        "subject": message.subject,
                        "partition": message.partition,
                        "deliveries": message.num_delivered,
                        "headers": message.headers,
                        "data": message.data.decode(errors="replace"),
                    }
                    out.print(json.dumps(line), soft_wrap=True, highlight=False)
                    await (message.ack_sync() if ack else message.nak())
                    seen += 1
            except TimeoutError:
                console.print(f"no more messages after {wait:g}s ({seen} read)")
            finally:
                await stream.aclose()

    _run(go())


@cli.command()
def enqueue(
    task: Annotated[str, typer.Argument(help="Task name, e.g. reports.build.")],
    payload: Annotated[str, typer.Argument(help="JSON payload; '-' reads stdin.")] = "null",
    queue: Annotated[str, typer.Option("--queue", "-q", help="The Queue.")] = "default",
    namespace: Namespace = None,
    key: Annotated[str | None, typer.Option(help="Partition key.")] = None,
    run_id: Annotated[str | None, typer.Option(help="Run id (default: a fresh one).")] = None,
    max_attempts: Annotated[int, typer.Option(min=1, help="Attempts before failing.")] = 3,
    backoff: Annotated[float, typer.Option(help="First retry delay in seconds.")] = 1.0,
    timeout: Annotated[
        float | None, typer.Option(help="Per-attempt time limit in seconds.")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the result.")] = False,
    wait_seconds: Annotated[float, typer.Option(help="How long --wait waits.")] = 120.0,
) -> None:
    """Run a task once (an ad-hoc run) and print its run id, or its result with --wait."""
    raw = sys.stdin.read() if payload == "-" else payload
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as error:
        raise typer.BadParameter(f"payload is not JSON: {error}", param_hint="PAYLOAD") from None
    retry = RetryPolicy(max_attempts=max_attempts, backoff=Backoff(initial_seconds=backoff))

    async def go() -> int:
        async with await KadenceClient.connect(_settings(namespace)) as client:
            request = await client.enqueue(
                task,
                value,
                queue=queue,
                key=key,
                run_id=run_id,
                retry=retry,
                timeout_seconds=timeout,
            )
            if not wait:
                out.print_json(data={"run_id": request.run_id, "queue": queue})
                return 0
            result = await client.wait_result(request.run_id, wait=wait_seconds)
            out.print_json(result.model_dump_json(exclude_none=True))
            return 0 if result.state == "Succeeded" else 1

    raise typer.Exit(_run(go()))


@cli.command("ensure-queue")
def ensure_queue(
    queue: Annotated[str, typer.Argument(help="The Queue.")],
    namespace: Namespace = None,
    partitions: Annotated[int, typer.Option(min=1)] = 1,
    ack_wait: Annotated[float, typer.Option(help="Seconds.")] = 30.0,
    max_deliver: Annotated[int, typer.Option(min=1)] = 5,
    replicas: Annotated[int, typer.Option(min=1)] = 1,
) -> None:
    """Create or update a Queue's streams without the operator (development only)."""
    settings = _settings(namespace)

    async def go() -> None:
        async with await KadenceClient.connect(settings) as client:
            await streams.ensure_queue_stream(
                client.js,
                namespace=settings.namespace,
                queue=queue,
                partitions=partitions,
                ack_wait=ack_wait,
                max_deliver=max_deliver,
                replicas=replicas,
            )
            await streams.ensure_dlq_stream(
                client.js, namespace=settings.namespace, queue=queue, replicas=replicas
            )
            await streams.ensure_results_stream(client.js, replicas=replicas)
            console.print(f"queue {settings.namespace}/{queue}: {partitions} partition(s) ready")

    _run(go())


@cli.command()
def runs(
    job: Annotated[str, typer.Argument(help="Name of the Job (kind Job, kadence.io).")],
    namespace: Namespace = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print status.runs as JSON.")] = False,
) -> None:
    """Print a Job's recent runs with their output locations, from its status."""
    try:
        from kadence import jobstatus
    except ImportError:
        console.print("[red]error:[/red] `kadence runs` needs: pip install 'kadence[leases]'")
        raise typer.Exit(2) from None
    settings = _settings(namespace)
    try:
        body = jobstatus.fetch_job(
            namespace=settings.namespace, name=job, kubeconfig=settings.kubeconfig
        )
    except jobstatus.JobNotFound as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from None
    if as_json:
        out.print_json(json.dumps((body.get("status") or {}).get("runs") or []))
    else:
        out.print(jobstatus.runs_table(body))


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
