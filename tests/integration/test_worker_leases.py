"""Job Leases on a real API server: no overlap, fencing tokens, stale holders, preemption.

Workers act as a ServiceAccount allowed only ``get``/``create``/``update`` on Leases, as a worker
pod would be.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry

from kadence import App, Context
from kadence.app import CancelFlag
from kadence.attempt import run_attempt
from kadence.constants import (
    LEASE_JOB_LABEL,
    LEASE_NEWEST_ANNOTATION,
    cancel_subject,
    lease_name,
)
from kadence.leases import (
    JobLock,
    LeaseClient,
    LeaseHeld,
    LeaseLost,
    LeasePreempted,
    LeaseRecord,
    LeaseSuperseded,
)
from kadence.metrics import WorkerMetrics
from kadence.outcomes import Disposition, Outcome
from kadence.protocol import (
    CancelRequest,
    ConcurrencyPolicy,
    JobRef,
    RunRequest,
    RunState,
    encode,
)
from kadence.storage import OutputWriter, S3Storage, output_location
from kadence_devstack.kube import KubeControlPlane
from kadence_devstack.nats import NatsServer
from kadence_devstack.s3 import S3Server
from tests.faults.tcpproxy import TcpProxy
from tests.integration.test_worker_support import (
    WorkerProcess,
    connected,
    final,
    fresh_queue,
    running_worker,
    unique,
    wait_results,
    worker_processes,
)

pytestmark = pytest.mark.integration

NAMESPACE = "default"


@pytest.fixture(scope="module")
def worker_kubeconfig(kube: KubeControlPlane) -> Iterator[Path]:
    """A kubeconfig for a ServiceAccount that may only get, create and update Leases."""
    admin = LeaseClient.from_kubeconfig(str(kube.kubeconfig)).api.api_client
    core, rbac = k8s.CoreV1Api(admin), k8s.RbacAuthorizationV1Api(admin)
    name = unique("kadence-worker-")
    core.create_namespaced_service_account(
        NAMESPACE, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name=name))
    )
    meta = k8s.V1ObjectMeta(name=name)
    rbac.create_namespaced_role(
        NAMESPACE,
        k8s.V1Role(
            metadata=meta,
            rules=[
                k8s.V1PolicyRule(
                    api_groups=["coordination.k8s.io"],
                    resources=["leases"],
                    verbs=["get", "create", "update"],
                )
            ],
        ),
    )
    rbac.create_namespaced_role_binding(
        NAMESPACE,
        k8s.V1RoleBinding(
            metadata=meta,
            role_ref=k8s.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name=name),
            subjects=[k8s.RbacV1Subject(kind="ServiceAccount", name=name, namespace=NAMESPACE)],
        ),
    )
    # RBAC is enforced by the API server's authorizer cache: wait until the binding is in effect.
    path = kube.kubeconfig_for_service_account(NAMESPACE, name)
    probe = LeaseClient.from_kubeconfig(str(path))
    deadline = time.monotonic() + 10
    while True:
        try:
            probe.read(NAMESPACE, "kadence-rbac-probe")
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    try:
        yield path
    finally:
        rbac.delete_namespaced_role_binding(name, NAMESPACE)
        rbac.delete_namespaced_role(name, NAMESPACE)
        core.delete_namespaced_service_account(name, NAMESPACE)


def read_lease(kube: KubeControlPlane, job: str) -> LeaseRecord | None:
    return LeaseClient.from_kubeconfig(str(kube.kubeconfig)).read(NAMESPACE, lease_name(job))


def a_job() -> JobRef:
    return JobRef(namespace=NAMESPACE, name=unique("job-"), uid=unique("uid-"))


def test_lock_protocol(worker_kubeconfig: Path, kube: KubeControlPlane) -> None:
    leases = LeaseClient.from_kubeconfig(str(worker_kubeconfig))
    job = unique("job-")
    first = leases.lock(namespace=NAMESPACE, job=job, holder="w1/r1/1", duration=2)
    second = leases.lock(namespace=NAMESPACE, job=job, holder="w2/r2/1", duration=2)
    assert first.acquire() == 0  # created
    record = read_lease(kube, job)
    assert record is not None
    assert (record.holder, record.duration, record.transitions) == ("w1/r1/1", 2, 0)
    assert record.labels[LEASE_JOB_LABEL] == job
    lease = LeaseClient.from_kubeconfig(str(kube.kubeconfig)).api.read_namespaced_lease(
        lease_name(job), NAMESPACE
    )
    assert [f.manager for f in lease.metadata.managed_fields] == ["kadence-worker"]
    with pytest.raises(LeaseHeld) as held:
        second.acquire()
    assert held.value.holder == "w1/r1/1"
    assert 0 < held.value.remaining <= 2
    first.renew()
    first.release()
    assert second.acquire() == 1  # released: taken at once, one more transition
    time.sleep(2.2)  # second stops renewing: its claim expires
    assert first.acquire() == 2  # taken over from the expired holder
    with pytest.raises(LeaseLost):
        second.renew()
    second.release()  # not the holder any more: leaves the Lease alone
    record = read_lease(kube, job)
    assert record is not None
    assert (record.holder, record.transitions) == ("w1/r1/1", 2)
    # The worker's ServiceAccount can do nothing else, e.g. delete the Lease.
    with pytest.raises(ApiException) as denied:
        leases.api.delete_namespaced_lease(lease_name(job), NAMESPACE)
    assert denied.value.status == 403


app = App("leases")
intervals: list[tuple[str, float, float]] = []


@app.task("jobs.exclusive")
async def exclusive(seconds: float, ctx: Context) -> int | None:
    start = time.monotonic()
    await asyncio.sleep(seconds)
    intervals.append((ctx.run_id, start, time.monotonic()))
    return ctx.fencing_token


async def test_forbid_never_runs_two_attempts_of_a_job_at_once(
    nats_server: NatsServer, kube: KubeControlPlane, worker_kubeconfig: Path, s3_server: S3Server
) -> None:
    intervals.clear()
    job = a_job()
    metrics = [WorkerMetrics(CollectorRegistry()) for _ in range(2)]
    bucket = unique("fenced-")
    storage = S3Storage(
        endpoint=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        secure=False,
    )
    async with connected(nats_server) as client, fresh_queue(client, ack_wait=10) as queue:
        leases = [LeaseClient.from_kubeconfig(str(worker_kubeconfig)) for _ in range(2)]
        async with (
            running_worker(
                app,
                nats_server,
                queue=queue,
                leases=leases[0],
                lease_duration=3,
                metrics=metrics[0],
                name="w1",
                storage=storage,
                output_bucket=bucket,
            ) as w1,
            running_worker(
                app,
                nats_server,
                queue=queue,
                leases=leases[1],
                lease_duration=3,
                metrics=metrics[1],
                name="w2",
                storage=storage,
                output_bucket=bucket,
            ) as w2,
        ):
            runs = [
                RunRequest(
                    run_id=unique("run-"),
                    task="jobs.exclusive",
                    payload=2.0,
                    job=job,
                    concurrency_policy=ConcurrencyPolicy.FORBID,
                    ack_wait_seconds=10,
                )
                for _ in range(2)
            ]
            await client.publish(queue.name, encode(runs[0]), msg_id=runs[0].run_id)
            first = await wait_results(
                client, lambda rs: len(rs) >= 1, job=job.name, run_id=runs[0].run_id
            )
            holder = first[0].worker
            # While the first attempt runs, the Lease names it.
            lease = read_lease(kube, job.name)
            assert lease is not None
            assert lease.holder == f"{holder}/{runs[0].run_id}/1"
            assert lease.live()
            assert lease.transitions == first[0].fencing_token
            # The second run goes to the idle worker, which finds the Lease held and waits.
            await client.publish(queue.name, encode(runs[1]), msg_id=runs[1].run_id)
            done = [
                await wait_results(client, final, job=job.name, run_id=r.run_id, within=25)
                for r in runs
            ]
            waits = sum(
                m.registry.get_sample_value("kadence_lease_waits_total", {"task": "jobs.exclusive"})
                or 0
                for m in metrics
            )
        assert {w1.name, w2.name} == {"w1", "w2"}
        assert w2 is not w1
        assert [d[-1].state for d in done] == [RunState.SUCCEEDED, RunState.SUCCEEDED]
        assert waits >= 1  # the second run was put back at least once
        (_, _, first_end), (_, second_start, _) = sorted(intervals, key=lambda i: i[1])
        assert first_end <= second_start, "two attempts of a Forbid Job overlapped"
        tokens = [d[-1].fencing_token for d in done]
        assert tokens[0] is not None
        assert tokens[1] is not None
        assert tokens[1] > tokens[0]
        # Each holder's outputs are in a folder named by its attempt and its fencing token.
        for run, results in zip(runs, done, strict=True):
            last = results[-1]
            folder = f"{run.run_id}/attempt-{last.attempt}-fence-{last.fencing_token}/"
            assert [o.uri for o in last.outputs] == [
                f"s3://{bucket}/{NAMESPACE}/{job.name}/{folder}result.json"
            ]
        lease = read_lease(kube, job.name)
        assert lease is not None
        assert lease.holder is None  # released after the run


def replace_run(job: JobRef, seconds: float, *, slot: datetime | None = None) -> RunRequest:
    """A Replace run of ``job`` that works ``seconds``, scheduled for ``slot`` if given."""
    return RunRequest(
        run_id=unique("run-"),
        task="jobs.exclusive",
        payload=seconds,
        job=job,
        concurrency_policy=ConcurrencyPolicy.REPLACE,
        ack_wait_seconds=10,
        scheduled_at=slot,
        trigger="Schedule" if slot is not None else None,
    )


def replace_runs(job: JobRef) -> tuple[RunRequest, RunRequest]:
    """A long Replace run (60 s) and the short one (0.5 s) that replaces it."""
    return replace_run(job, 60.0), replace_run(job, 0.5)


async def test_replace_preempts_the_running_attempt(
    nats_server: NatsServer, kube: KubeControlPlane, worker_kubeconfig: Path
) -> None:
    job = a_job()
    async with connected(nats_server) as client, fresh_queue(client, ack_wait=10) as queue:
        async with (
            running_worker(
                app,
                nats_server,
                queue=queue,
                name="old",
                lease_duration=3,
                leases=LeaseClient.from_kubeconfig(str(worker_kubeconfig)),
            ),
            running_worker(
                app,
                nats_server,
                queue=queue,
                name="new",
                lease_duration=3,
                leases=LeaseClient.from_kubeconfig(str(worker_kubeconfig)),
            ),
        ):
            old, new = replace_runs(job)
            await client.publish(queue.name, encode(old), msg_id=old.run_id)
            await wait_results(client, lambda rs: len(rs) >= 1, job=job.name, run_id=old.run_id)
            await client.publish(queue.name, encode(new), msg_id=new.run_id)
            replaced = await wait_results(client, final, job=job.name, run_id=old.run_id)
            succeeded = await wait_results(client, final, job=job.name, run_id=new.run_id)
        assert replaced[-1].state is RunState.CANCELLED
        assert replaced[-1].error is not None
        assert replaced[-1].error.type == "Replaced"
        assert replaced[-1].is_final
        assert succeeded[-1].state is RunState.SUCCEEDED
        assert succeeded[-1].finished_at is not None
        assert replaced[-1].finished_at is not None
        assert replaced[-1].finished_at <= succeeded[-1].finished_at
        assert await client.js.stream_info(queue.stream) is not None


async def test_replace_cancel_request_stops_the_attempt_of_a_busy_worker(
    nats_server: NatsServer, kube: KubeControlPlane, worker_kubeconfig: Path
) -> None:
    """One worker with one slot is busy with the old attempt, so it cannot fetch the replacing
    run and preempt through the Lease: the cancel request the scheduler publishes for Replace
    stops the old attempt, and the new run then runs on the same worker."""
    job = a_job()
    async with connected(nats_server) as client, fresh_queue(client, ack_wait=10) as queue:
        async with running_worker(
            app,
            nats_server,
            queue=queue,
            name="solo",
            concurrency=1,
            lease_duration=3,
            leases=LeaseClient.from_kubeconfig(str(worker_kubeconfig)),
        ):
            old, new = replace_runs(job)
            await client.publish(queue.name, encode(old), msg_id=old.run_id)
            await wait_results(client, lambda rs: len(rs) >= 1, job=job.name, run_id=old.run_id)
            subject = cancel_subject(job.namespace, job.name)
            # Neither garbage nor a cancel naming other runs stops the attempt (or the worker).
            await client.nc.publish(subject, b"{not json")
            other = CancelRequest(job_uid=job.uid, run_ids=("some-other-run",))
            await client.nc.publish(subject, encode(other))
            await client.nc.publish(
                subject, encode(CancelRequest(job_uid=job.uid, run_ids=(old.run_id,)))
            )
            await client.publish(queue.name, encode(new), msg_id=new.run_id)
            replaced = await wait_results(client, final, job=job.name, run_id=old.run_id)
            succeeded = await wait_results(client, final, job=job.name, run_id=new.run_id)
        assert [r.state for r in replaced] == [RunState.RUNNING, RunState.CANCELLED]
        assert replaced[-1].error is not None
        assert replaced[-1].error.type == "Replaced"
        assert "cancel request" in replaced[-1].error.message
        assert succeeded[-1].state is RunState.SUCCEEDED
        assert succeeded[-1].worker == replaced[-1].worker == "solo"


APP = """
import asyncio

import kadence

app = kadence.App("stale")


@app.task("jobs.slow")
async def slow(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "done"
"""


async def test_a_frozen_holder_reports_with_a_stale_fencing_token(
    nats_server: NatsServer, kube: KubeControlPlane, worker_kubeconfig: Path, tmp_path: Path
) -> None:
    job = a_job()
    env = {"KUBECONFIG": str(worker_kubeconfig)}
    args = ["--lease-duration", "3", "--grace-period", "1"]
    async with connected(nats_server) as client, fresh_queue(client, ack_wait=2) as queue:
        with worker_processes() as procs:
            first = WorkerProcess(
                tmp_path,
                app_source=APP,
                queue=queue,
                nats=nats_server,
                name="frozen",
                env=env,
                args=args,
            )
            procs.append(first)
            await first.start()
            request = RunRequest(
                run_id=unique("run-"),
                task="jobs.slow",
                payload=4.0,
                job=job,
                concurrency_policy=ConcurrencyPolicy.FORBID,
                ack_wait_seconds=2,
            )
            await client.publish(queue.name, encode(request), msg_id=request.run_id)
            (running,) = await wait_results(
                client, lambda rs: len(rs) >= 1, job=job.name, run_id=request.run_id
            )
            # Freeze the holder past its Lease (3 s) and the ack wait (2 s).
            first.process.signal(signal.SIGSTOP)
            await asyncio.sleep(3.5)
            second = WorkerProcess(
                tmp_path,
                app_source=APP,
                queue=queue,
                nats=nats_server,
                name="fresh",
                env=env,
                args=args,
            )
            procs.append(second)
            await second.start()
            await wait_results(
                client,
                lambda rs: any(r.worker == "fresh" for r in rs),
                job=job.name,
                run_id=request.run_id,
            )
            first.process.signal(signal.SIGCONT)
            results = await wait_results(
                client,
                lambda rs: (
                    any(r.worker == "frozen" and r.state != "Running" for r in rs)
                    and any(r.state == "Succeeded" for r in rs)
                ),
                job=job.name,
                run_id=request.run_id,
                within=20,
            )
        by_worker = {(r.worker, r.state): r for r in results}
        assert running.worker == "frozen"
        assert running.fencing_token is not None
        fresh = by_worker[("fresh", RunState.SUCCEEDED)]
        assert fresh.attempt == 2
        assert fresh.fencing_token is not None
        late = [r for r in results if r.worker == "frozen" and r.state != RunState.RUNNING]
        assert [r.state for r in late] == [RunState.RETRYING]  # not final: "fresh" has it
        assert late[0].error is not None
        assert late[0].error.type == "LeaseLost"
        # The stale holder's late report carries the older, smaller token: the operator can
        # tell it apart from the current holder's report.
        assert late[0].fencing_token == running.fencing_token
        assert late[0].fencing_token < fresh.fencing_token
        assert not any(r.state is RunState.SUCCEEDED for r in results if r.worker == "frozen")
        lease = read_lease(kube, job.name)
        assert lease is not None
        assert lease.holder is None


class CountingLeaseClient(LeaseClient):
    """Counts the reads the lock makes (the real API server answers them)."""

    reads = 0

    def read(self, namespace: str, name: str) -> LeaseRecord | None:
        self.reads += 1
        return super().read(namespace, name)


def test_renew_and_release_write_without_reading_unless_someone_else_wrote(
    worker_kubeconfig: Path, kube: KubeControlPlane
) -> None:
    leases = CountingLeaseClient(LeaseClient.from_kubeconfig(str(worker_kubeconfig)).api.api_client)
    job = unique("job-")
    lock = leases.lock(namespace=NAMESPACE, job=job, holder="w1/r1/1", duration=5)
    other = leases.lock(namespace=NAMESPACE, job=job, holder="w2/r2/1", duration=5)
    lock.acquire()
    reads = leases.reads
    lock.renew()
    lock.verify()
    lock.renew()
    assert leases.reads == reads  # only our own writes since: each renew is a single PUT
    assert read_lease(kube, job).holder == "w1/r1/1"  # type: ignore[union-attr]
    # A preemption request changes the Lease: the next renew sees the 409, reads, and stops.
    assert other.preempt()
    with pytest.raises(LeasePreempted):
        lock.renew()
    assert leases.reads > reads
    lock.verify()  # verify ignores a preemption request and still holds the Lease
    reads = leases.reads
    lock.release()
    assert leases.reads == reads
    record = read_lease(kube, job)
    assert record is not None
    assert (record.holder, record.transitions) == (None, 0)
    assert other.acquire() == 1


def test_replace_orders_its_runs_by_slot(worker_kubeconfig: Path, kube: KubeControlPlane) -> None:
    """An ordered lock (``Replace``) records the newest slot that took the Lease, across
    holders and releases, and refuses an older run: it must neither run after a newer run nor
    ask it to stop."""
    leases = LeaseClient.from_kubeconfig(str(worker_kubeconfig))
    job = unique("job-")
    t1, t2 = (datetime(2026, 12, 6, 12, 0, s, tzinfo=UTC) for s in (0, 4))

    def ordered(holder: str, slot: datetime) -> JobLock:
        return leases.lock(
            namespace=NAMESPACE, job=job, holder=holder, scheduled_at=slot, duration=5
        )

    old, new = ordered("w1/old/1", t1), ordered("w2/new/1", t2)
    old.acquire()
    with pytest.raises(LeaseHeld):
        new.acquire()  # an older run holds it: the newer one waits ...
    assert new.preempt()  # ... and asks it to stop
    with pytest.raises(LeasePreempted):
        old.renew()
    old.release()
    assert new.acquire() == 1
    record = read_lease(kube, job)
    assert record is not None
    assert record.annotations[LEASE_NEWEST_ANNOTATION] == "2026-12-06T12:00:04.000000Z"
    # The older run's next delivery finds the newer one: neither waits nor preempts.
    late = ordered("w1/old/2", t1)
    with pytest.raises(LeaseSuperseded) as superseded:
        late.acquire()
    assert "2026-12-06T12:00:04" in str(superseded.value)
    with pytest.raises(LeaseSuperseded):
        late.preempt()
    new.renew()
    new.release()
    with pytest.raises(LeaseSuperseded):
        late.acquire()  # also once the newer run has ended
    # The newer run's own retry, and a newer run still, take it; an unordered lock keeps the mark.
    assert ordered("w2/new/2", t2).acquire() == 2
    record = read_lease(kube, job)
    assert record is not None
    assert record.annotations[LEASE_NEWEST_ANNOTATION] == "2026-12-06T12:00:04.000000Z"


async def test_an_older_replace_run_ends_cancelled_without_stopping_the_newer(
    nats_server: NatsServer, kube: KubeControlPlane, worker_kubeconfig: Path
) -> None:
    """A Replace run delivered after a newer run of its Job took the Lease (it waited for the
    Lease, or was redelivered) ends ``Cancelled`` at once; the newer run goes on."""
    job = a_job()
    newer, older = (
        replace_run(job, seconds, slot=datetime(2026, 12, 6, 12, 0, second, tzinfo=UTC))
        for seconds, second in ((2.0, 4), (0.5, 0))
    )
    leases = LeaseClient.from_kubeconfig(str(worker_kubeconfig))
    async with (
        connected(nats_server) as client,
        fresh_queue(client, ack_wait=10) as queue,
        running_worker(
            app, nats_server, queue=queue, name="w", concurrency=2, lease_duration=3, leases=leases
        ),
    ):
        await client.publish(queue.name, encode(newer), msg_id=newer.run_id)
        await wait_results(client, lambda rs: len(rs) >= 1, job=job.name, run_id=newer.run_id)
        await client.publish(queue.name, encode(older), msg_id=older.run_id)
        cancelled = await wait_results(client, final, job=job.name, run_id=older.run_id)
        succeeded = await wait_results(client, final, job=job.name, run_id=newer.run_id)
    assert [r.state for r in cancelled] == [RunState.CANCELLED]  # never started
    assert cancelled[0].error is not None
    assert cancelled[0].error.type == "Replaced"
    assert "newer run" in cancelled[0].error.message
    assert (cancelled[0].trigger, cancelled[0].scheduled_at) == ("Schedule", older.scheduled_at)
    assert [r.state for r in succeeded] == [RunState.RUNNING, RunState.SUCCEEDED]


def first_attempt(request: RunRequest, *, worker: str) -> tuple[Context, CancelFlag]:
    """The context of attempt 1 of ``request`` on ``worker`` (no store), and its cancel flag."""
    cancel = CancelFlag()
    ctx = Context(
        request=request,
        attempt=1,
        output=OutputWriter(
            None, output_location(request, namespace=NAMESPACE, bucket="b", attempt=1)
        ),
        heartbeat=lambda: None,
        worker=worker,
        cancel_event=cancel,
    )
    return ctx, cancel


async def test_a_holder_that_lost_its_lease_reports_no_final_state(
    worker_kubeconfig: Path, kube: KubeControlPlane
) -> None:
    """A holder frozen past its Lease resumes to a cancel request (or its timeout, or its
    success) after a newer attempt took the Lease: only the holder reports the run's end, so
    its outcome is ``LeaseLost`` (not final, the message left to the holder)."""
    leases = LeaseClient.from_kubeconfig(str(worker_kubeconfig))
    job = a_job()
    stale = leases.lock(namespace=NAMESPACE, job=job.name, holder="w1/run/1", duration=1)
    await stale.aacquire()
    await asyncio.sleep(1.3)  # frozen past its Lease ...
    holder = leases.lock(namespace=NAMESPACE, job=job.name, holder="w2/run/2", duration=10)
    await holder.aacquire()  # ... and replaced by the redelivery's attempt
    request = RunRequest(
        run_id="run",
        task="jobs.exclusive",
        payload=30.0,
        job=job,
        concurrency_policy=ConcurrencyPolicy.REPLACE,
    )
    spec = app.get("jobs.exclusive")
    assert spec is not None

    async def resumed(lock: JobLock) -> Outcome:
        ctx, cancel = first_attempt(request, worker="w1")
        replaced: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        replaced.set_result(None)  # the operator's cancel request, waiting when it resumes
        return await run_attempt(
            spec, ctx, executor=None, cancel_event=cancel, store=None, lock=lock, replaced=replaced
        )

    outcome = await resumed(stale)
    assert outcome.state is RunState.RETRYING
    assert outcome.disposition is Disposition.NONE
    assert outcome.error is not None
    assert outcome.error.type == "LeaseLost"
    assert "Cancelled is not reported" in outcome.error.message
    # The holder's own cancel is reported.
    assert (await resumed(holder)).state is RunState.CANCELLED


async def test_a_run_holds_its_lease_until_its_report_and_ack_are_through(
    nats_server: NatsServer, kube: KubeControlPlane, worker_kubeconfig: Path, tmp_path: Path
) -> None:
    """Soak seed 2's worker-partition: the worker was cut off from NATS as its Forbid attempt
    ended, so the report and the ack waited; the Lease was no longer renewed once the handler
    returned, ran out, and the run's redelivery took it and ran the task again (Succeeded
    twice). The Lease is renewed until it is released, after the ack."""
    from kadence.client import KadenceClient
    from kadence.config import Settings
    from kadence.runtime import Worker

    proxy = TcpProxy(workdir=tmp_path / "tcpproxy", log_path=tmp_path / "tcpproxy.log")
    proxy.start({"nats": ("127.0.0.1", nats_server.nodes[0].port)})
    job = a_job()
    request = RunRequest(
        run_id=unique("run-"),
        task="jobs.exclusive",
        payload=1.0,
        job=job,
        concurrency_policy=ConcurrencyPolicy.FORBID,
        ack_wait_seconds=2,
    )
    try:
        async with connected(nats_server) as client, fresh_queue(client, ack_wait=2) as queue:
            settings = Settings(
                nats_urls=(f"nats://127.0.0.1:{proxy.port('nats')}",),
                namespace=queue.namespace,
                worker_name="cut",
            )
            worker_client = await KadenceClient.connect(settings)
            worker = Worker(
                app,
                worker_client,
                queue=queue.name,
                name="cut",
                lease_duration=2,
                leases=LeaseClient.from_kubeconfig(str(worker_kubeconfig)),
                fetch_timeout=1.0,
                running_report_delay=0.0,
                metrics=WorkerMetrics(CollectorRegistry()),
            )
            running = asyncio.create_task(worker.run())
            try:
                await asyncio.wait_for(worker.ready.wait(), 10)
                await client.publish(queue.name, encode(request), msg_id=request.run_id)
                await wait_results(
                    client, lambda rs: len(rs) >= 1, job=job.name, run_id=request.run_id
                )
                proxy.partition("nats")  # the attempt ends (1 s) with NATS out of reach
                await asyncio.sleep(5.0)  # over twice the Lease (2 s) and the ack wait (2 s)
                lease = read_lease(kube, job.name)
                assert lease is not None
                assert lease.holder == f"cut/{request.run_id}/1"
                assert lease.live(), "the Lease ran out while the report was on its way"
                proxy.heal()
                results = await wait_results(
                    client, final, job=job.name, run_id=request.run_id, within=20
                )
            finally:
                proxy.heal()
                worker.stop()
                await asyncio.wait_for(running, 60)
                await worker_client.close()
        assert [(r.state, r.attempt) for r in results if r.is_final] == [(RunState.SUCCEEDED, 1)]
    finally:
        proxy.stop()


async def test_a_preemption_request_after_the_attempt_ended_does_not_end_the_hold(
    worker_kubeconfig: Path, kube: KubeControlPlane
) -> None:
    """Soak seed 3's worker-partition: a Replace attempt ended as the worker was cut off from
    NATS, and the next run asked for the Lease. The renewals stopped at that request, the Lease
    ran out while the report waited, and the run's redelivery took it and ran the run again:
    Succeeded, then Cancelled, in the results stream. After the attempt, a preemption request
    only waits for the release; a keeper it had stopped already is started again."""
    leases = LeaseClient.from_kubeconfig(str(worker_kubeconfig))
    job = unique("job-")
    for early in (False, True):
        holder = f"w1/{job}-{early}/1"
        lock = leases.lock(namespace=NAMESPACE, job=job, holder=holder, duration=2)
        newer = leases.lock(namespace=NAMESPACE, job=job, holder="w2/newer/1", duration=2)
        await lock.aacquire()
        keeper = lock.keeping()
        if early:  # the request came as the handler returned: the keeper stopped at it
            assert await newer.apreempt()
            with pytest.raises(LeasePreempted):
                await asyncio.wait_for(keeper, 5)
        lock.attempt_ended()
        assert await newer.apreempt() or early
        await asyncio.sleep(3.0)  # longer than the Lease (2 s): renewed meanwhile
        lease = read_lease(kube, job)
        assert lease is not None
        assert (lease.holder, lease.live()) == (holder, True)
        with pytest.raises(LeaseHeld):
            await newer.aacquire()
        await lock.arelease()
        assert (await newer.aacquire()) >= 1
        await newer.arelease()


def through_a_proxy(kubeconfig: Path, tmp_path: Path) -> tuple[TcpProxy, Path]:
    """A TCP proxy to the API server (route ``api``), and a copy of ``kubeconfig`` naming it."""
    config = yaml.safe_load(kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    host, port = cluster["server"].removeprefix("https://").rsplit(":", 1)
    proxy = TcpProxy(workdir=tmp_path / "tcpproxy", log_path=tmp_path / "tcpproxy.log")
    proxy.start({"api": (host, int(port))})
    cluster["server"] = f"https://{host}:{proxy.port('api')}"
    path = tmp_path / "kubeconfig-proxied"
    path.write_text(yaml.safe_dump(config))
    return proxy, path


async def test_a_holder_that_cannot_reach_the_api_server_reports_no_final_state(
    worker_kubeconfig: Path, kube: KubeControlPlane, tmp_path: Path
) -> None:
    """Soak seed 3, the other half: a worker cut off from the API server could not verify its
    Lease and reported its success anyway; the report came after the run's redelivery had taken
    the Lease and run it again elsewhere. Verifying is retried until the hold would have run
    out, then the outcome is ``LeaseLost`` (not final, the message left for the redelivery)."""
    proxy, cut = through_a_proxy(worker_kubeconfig, tmp_path)
    try:
        job = a_job()
        lock = LeaseClient.from_kubeconfig(str(cut)).lock(
            namespace=NAMESPACE, job=job.name, holder="cut/run/1", duration=3
        )
        await lock.aacquire()
        request = RunRequest(
            run_id="run",
            task="jobs.exclusive",
            payload=0.5,
            job=job,
            concurrency_policy=ConcurrencyPolicy.FORBID,
        )
        spec = app.get("jobs.exclusive")
        assert spec is not None
        ctx, cancel = first_attempt(request, worker="cut")
        attempt = asyncio.ensure_future(
            run_attempt(spec, ctx, executor=None, cancel_event=cancel, store=None, lock=lock)
        )
        proxy.partition("api")  # the handler (0.5 s) returns with the API server out of reach
        outcome = await asyncio.wait_for(attempt, 60)  # the client retries timed-out requests
        lock.stop_keeping()
    finally:
        proxy.stop()
    assert outcome.state is RunState.RETRYING
    assert outcome.disposition is Disposition.NONE
    assert outcome.error is not None
    assert outcome.error.type == "LeaseLost"
    assert "could not verify" in outcome.error.message
    assert "Succeeded is not reported" in outcome.error.message
