"""Workers reach NATS as their ServiceAccount, and RBAC decides their Queues (issue #28).

Real servers throughout: the API server (TokenReview, SubjectAccessReview, the Queue CRD), a
nats-server whose clients all go through the auth callout, and the callout service itself
(``python -m kadence_operator.identity``) as a process of its own. Two namespaces, team-a and
team-b, each with a Queue ``reports``, its stream, and a ServiceAccount ``kadence-worker`` that a
Role lets ``consume`` and ``publish`` on its namespace's Queues. Tokens come from the TokenRequest
API with the audience ``kadence.io/nats``, exactly as a projected token in a pod would.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import ssl
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from prometheus_client import CollectorRegistry

from kadence import App, constants
from kadence.client import KadenceClient
from kadence.config import Settings
from kadence.metrics import WorkerMetrics
from kadence.protocol import RunResult
from kadence.runtime import Worker
from kadence.streams import ensure_dlq_stream, ensure_queue_stream, ensure_results_stream
from kadence_devstack.kube import KubeControlPlane
from kadence_devstack.nats import AuthCallout, NatsServer
from kadence_devstack.procs import ManagedProcess
from kadence_operator.identity import natsjwt
from tests.conftest import track

from .harness import apply, install_crds, kubectl, wait_for

pytestmark = pytest.mark.integration

AUDIENCE = "kadence.io/nats"
TEAMS = ("team-a", "team-b")
QUEUE = "reports"
WORKER_SA = "kadence-worker"
OPERATOR = ("kadence-identity-system", "kadence-operator")
#: How long a refused operation is given to show it changed nothing.
SETTLE = 1.0

app = App("identity")


@app.task("identity.echo")
def echo(payload: dict[str, Any]) -> dict[str, Any]:
    return payload


@dataclass
class Stack:
    kube: KubeControlPlane
    nats: NatsServer
    callout: ManagedProcess
    workdir: Path

    def token(
        self, namespace: str, name: str, *, audience: str | None = AUDIENCE, seconds: int = 3600
    ) -> str:
        return self.kube.service_account_token(
            namespace, name, audiences=(audience,) if audience else (), expiration_seconds=seconds
        )

    def token_file(self, token: str) -> Path:
        path = self.workdir / f"token-{secrets.token_hex(4)}"
        path.write_text(token)
        path.chmod(0o600)
        return path

    def settings(self, namespace: str, name: str, *, token: str | None = None) -> Settings:
        """A worker's or client's settings: its token file and its own inbox prefix."""
        return Settings(
            nats_urls=tuple(self.nats.urls),
            namespace=namespace,
            worker_name=f"{namespace}-{name}",
            nats_token_file=str(self.token_file(token or self.token(namespace, name))),
            nats_inbox_prefix=f"_INBOX.{namespace}.{name}",
            nats_ca=str(self.nats.ca_file) if self.nats.ca_file else None,
        )

    def tls(self) -> ssl.SSLContext | None:
        """What a client trusts the server with (the token crosses the wire: TLS only)."""
        if self.nats.ca_file is None:
            return None
        return ssl.create_default_context(cafile=str(self.nats.ca_file))

    def logs(self) -> str:
        return self.callout.log_path.read_text() + "".join(
            n.process.log_path.read_text() for n in self.nats.nodes
        )


def role(namespace: str, name: str, verbs: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"namespace": namespace, "name": name},
            "rules": [{"apiGroups": ["kadence.io"], "resources": ["queues"], "verbs": verbs}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"namespace": namespace, "name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    ]


def service_account(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"namespace": namespace, "name": name},
    }


@pytest.fixture(scope="module")
def stack(kube: KubeControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("identity")
    install_crds(kube)
    namespaces = [*TEAMS, OPERATOR[0]]
    apply(
        kube,
        *({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in namespaces),
    )
    docs: list[dict[str, Any]] = [service_account(*OPERATOR)]
    for team in TEAMS:
        docs.append(
            {
                "apiVersion": "kadence.io/v1alpha1",
                "kind": "Queue",
                "metadata": {"namespace": team, "name": QUEUE},
                "spec": {},
            }
        )
        docs.append(service_account(team, WORKER_SA))
        docs += role(team, WORKER_SA, ["consume", "publish"])
    apply(kube, *docs)

    with serving(kube, workdir) as running:
        yield running


#: The line the callout logs once it is subscribed (its readiness).
CALLOUT_READY = "answering NATS authorization requests"


def start_callout(callout: ManagedProcess) -> None:
    """Start (or start again) the callout and wait until it answers; only the log written by
    this start counts, since a restarted callout appends to the same file."""
    log = callout.log_path
    offset = log.stat().st_size if log.exists() else 0

    def ready() -> bool:
        with log.open("rb") as f:
            f.seek(offset)
            return CALLOUT_READY.encode() in f.read()

    callout.start(ready=ready, timeout=30)


@contextlib.contextmanager
def serving(kube: KubeControlPlane, workdir: Path, *, tls: bool = True) -> Iterator[Stack]:
    """A nats-server whose clients all go through the auth callout, and the callout service as
    a process of its own, with a fresh issuer key and callout password in ``workdir``; both
    stopped (by PID) on the way out. The Kubernetes objects are the module fixture's."""
    issuer = natsjwt.new_account_key()
    seed_file = workdir / "issuer.seed"
    seed_file.write_bytes(bytes(issuer.seed))
    seed_file.chmod(0o600)
    password = secrets.token_hex(16)
    password_file = workdir / "callout.password"
    password_file.write_text(password)
    password_file.chmod(0o600)
    server = NatsServer(
        workdir / "nats",
        auth_callout=AuthCallout(
            issuer=natsjwt.public_key(issuer), user="kadence-callout", password=password
        ),
        tls=tls,  # the tokens cross the wire: as in a cluster, clients connect with TLS only
    )
    callout = ManagedProcess(
        name="kadence-nats-callout",
        argv=[
            sys.executable,
            "-m",
            "kadence_operator.identity",
            "--issuer-seed-file",
            str(seed_file),
            "--password-file",
            str(password_file),
            "--operator-service-account",
            "/".join(OPERATOR),
        ],
        log_path=workdir / "callout.log",
    )
    try:
        server.start()
        track([n.process for n in server.nodes])
        callout.env = {
            **os.environ,
            "KUBECONFIG": str(kube.kubeconfig),
            "KADENCE_NATS_URL": server.url,
            **({"KADENCE_NATS_CA": str(server.ca_file)} if server.ca_file else {}),
        }
        start_callout(callout)
        track([callout])
        yield Stack(kube=kube, nats=server, callout=callout, workdir=workdir)
    finally:
        callout.stop()
        server.stop()


@contextlib.asynccontextmanager
async def as_operator(stack: Stack) -> AsyncIterator[KadenceClient]:
    client = await KadenceClient.connect(stack.settings(*OPERATOR))
    try:
        yield client
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def as_identity(
    stack: Stack, namespace: str, name: str = WORKER_SA
) -> AsyncIterator[tuple[KadenceClient, list[str]]]:
    """A client of ``namespace/name``, and the errors the server sent it (Permissions
    Violations arrive there: the server refuses the operation and keeps the connection)."""
    errors: list[str] = []

    async def on_error(error: Exception) -> None:
        errors.append(str(error))

    client = await KadenceClient.connect(
        stack.settings(namespace, name), error_cb=on_error, connect_timeout=10
    )
    try:
        yield client, errors
    finally:
        await client.close()


@pytest.fixture
async def queues(stack: Stack) -> AsyncIterator[KadenceClient]:
    """The two teams' streams, made as the operator (its identity may manage every stream), and
    emptied afterwards. Yields the operator's client to look at them with."""
    async with as_operator(stack) as op:
        await ensure_results_stream(op.js)
        for team in TEAMS:
            await ensure_queue_stream(op.js, namespace=team, queue=QUEUE, ack_wait=30)
            await ensure_dlq_stream(op.js, namespace=team, queue=QUEUE)
        try:
            yield op
        finally:
            for team in TEAMS:
                for stream in (
                    constants.stream_name(team, QUEUE),
                    constants.dlq_stream_name(team, QUEUE),
                ):
                    with contextlib.suppress(Exception):
                        await op.js.purge_stream(stream)


async def violation(errors: list[str], subject: str, *, within: float = 5.0) -> str:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for error in errors:
            # nats-py lower-cases the server's -ERR line.
            if "permissions violation" in error.lower() and subject.lower() in error.lower():
                return error
        await asyncio.sleep(0.05)
    raise AssertionError(f"no Permissions Violation for {subject} within {within}s: {errors}")


async def message_count(op: KadenceClient, stream: str) -> int:
    return int((await op.js.stream_info(stream)).state.messages)


# -- what a legitimate worker does ------------------------------------------------------------


async def test_each_teams_worker_runs_its_own_queue(stack: Stack, queues: KadenceClient) -> None:
    """A real :class:`Worker` on each team's identity: pulls, runs, acks, reports; its own
    client enqueued the run (``publish``)."""
    for team in TEAMS:
        async with (
            as_identity(stack, team) as (client, errors),
            as_identity(stack, team) as (publisher, _),
        ):
            worker = Worker(
                app,
                client,
                queue=QUEUE,
                name=f"{team}-w",
                fetch_timeout=1.0,
                running_report_delay=0.0,
                metrics=WorkerMetrics(CollectorRegistry()),
            )
            task = asyncio.create_task(worker.run())
            try:
                await asyncio.wait_for(worker.ready.wait(), 10)
                request = await publisher.enqueue("identity.echo", {"team": team}, queue=QUEUE)
                deadline = time.monotonic() + 20
                final: list[RunResult] = []
                while time.monotonic() < deadline and not final:
                    results = await queues.results(namespace=team, idle=0.3)
                    final = [r for r in results if r.run_id == request.run_id and r.is_final]
                    await asyncio.sleep(0.2)
                assert final, f"no final result for {team}'s run"
                assert final[0].state.value == "Succeeded"
            finally:
                worker.stop()
                await asyncio.wait_for(task, 30)
            info = await queues.js.consumer_info(
                constants.stream_name(team, QUEUE), constants.consumer_name(0)
            )
            assert info.num_ack_pending == 0
            assert info.num_pending == 0
            assert not [e for e in errors if "permissions violation" in e.lower()], errors


# -- what team-a may not do to team-b --------------------------------------------------------


async def test_team_a_can_neither_read_nor_change_team_b(
    stack: Stack, queues: KadenceClient
) -> None:
    stream_b = constants.stream_name("team-b", QUEUE)
    dlq_b = constants.dlq_stream_name("team-b", QUEUE)
    async with as_identity(stack, "team-b") as (b, b_errors):
        await b.publish(QUEUE, b"for team-b", partition=0)
        # team-b's worker takes the message, so that there is a real ack subject to abuse.
        pull = await b.js.pull_subscribe_bind(constants.consumer_name(0), stream=stream_b)
        (taken,) = await pull.fetch(1, timeout=5)
        ack_subject = taken.reply
        assert ack_subject.startswith(f"$JS.ACK.{stream_b}.")

        async with as_identity(stack, "team-a") as (a, errors):
            nc = a.nc
            # Fetch from team-b's consumer.
            fetch = f"$JS.API.CONSUMER.MSG.NEXT.{stream_b}.{constants.consumer_name(0)}"
            with pytest.raises((TimeoutError, nats.errors.TimeoutError)):
                await nc.request(fetch, b'{"batch":1}', timeout=SETTLE)
            await violation(errors, fetch)
            # Ack team-b's delivered message.
            await nc.publish(ack_subject, b"+ACK")
            await violation(errors, ack_subject)
            # Subscribe to team-b's Queue, cancel requests, and every inbox.
            received: list[Msg] = []

            async def keep(msg: Msg) -> None:
                received.append(msg)

            for subject in (
                constants.subjects_wildcard("team-b", QUEUE),
                constants.cancel_subject("team-b", "*"),
                "_INBOX.>",
                "_INBOX.team-b.kadence-worker.>",
            ):
                await nc.subscribe(subject, cb=keep)
                await violation(errors, subject)
            await queues.nc.publish(constants.cancel_subject("team-b", "nightly"), b"{}")
            # Publish to team-b's Queue, results, dead letters; delete team-b's stream.
            before = await message_count(queues, stream_b)
            for subject in (
                constants.subject("team-b", QUEUE, 0),
                constants.results_subject("team-b", "x"),
                constants.dlq_subject("team-b", QUEUE),
            ):
                with pytest.raises((TimeoutError, nats.errors.TimeoutError)):
                    await a.js.publish(subject, b"from team-a", timeout=SETTLE)
                await violation(errors, subject)
            with pytest.raises((TimeoutError, nats.errors.TimeoutError)):
                await a.js.delete_stream(stream_b)
            await violation(errors, f"$JS.API.STREAM.DELETE.{stream_b}")
            await asyncio.sleep(SETTLE)

            # Nothing changed: team-b's message is still delivered-and-unacked, its streams
            # hold what they held, no result for team-b was stored, team-a saw no message.
            info = await queues.js.consumer_info(stream_b, constants.consumer_name(0))
            assert info.num_ack_pending == 1
            assert await message_count(queues, stream_b) == before
            assert await message_count(queues, dlq_b) == 0
            assert not [r for r in await queues.results(job="x", namespace="team-b", idle=0.3)]
            assert not received
        await taken.ack()
        assert not [e for e in b_errors if "permissions violation" in e.lower()], b_errors


# -- RBAC decides, per connection ------------------------------------------------------------


async def test_the_consume_verb_is_needed_and_a_new_grant_counts_at_once(
    stack: Stack, queues: KadenceClient
) -> None:
    """Without a Role an identity connects but may not even look at a Queue; a RoleBinding
    created afterwards lets the next connection consume, with nothing restarted."""
    name = f"newcomer-{secrets.token_hex(3)}"
    apply(stack.kube, service_account("team-a", name))
    stream_a = constants.stream_name("team-a", QUEUE)
    info_subject = f"$JS.API.CONSUMER.INFO.{stream_a}.{constants.consumer_name(0)}"
    async with as_identity(stack, "team-a", name) as (client, errors):
        with pytest.raises((TimeoutError, nats.errors.TimeoutError)):
            await client.js.consumer_info(stream_a, constants.consumer_name(0), timeout=SETTLE)
        await violation(errors, info_subject)
    # `kubectl auth can-i` and the callout agree.
    who = f"--as=system:serviceaccount:team-a:{name}"
    can = ["auth", "can-i", "consume", f"queues.kadence.io/{QUEUE}", "-n", "team-a", who]
    with pytest.raises(RuntimeError):
        kubectl(stack.kube, *can)  # exit 1: "no"
    apply(stack.kube, *role("team-a", name, ["consume"]))
    assert kubectl(stack.kube, *can).strip() == "yes"
    await queues.js.publish(constants.subject("team-a", QUEUE, 0), b"for the newcomer")
    async with as_identity(stack, "team-a", name) as (client, errors):
        async with client.consume(QUEUE, partitions=[0], fetch_timeout=1.0) as consumer:
            message = await asyncio.wait_for(anext(consumer), 10)
            assert message.data == b"for the newcomer"
            await message.ack_sync()
        # consume, not publish: enqueueing is still refused.
        with pytest.raises((TimeoutError, nats.errors.TimeoutError)):
            await client.js.publish(constants.subject("team-a", QUEUE, 0), b"x", timeout=SETTLE)
        await violation(errors, constants.subject("team-a", QUEUE, 0))


# -- refused tokens --------------------------------------------------------------------------


def forged(token: str) -> str:
    """The same claims, signed by a key the API server does not know."""
    header, claims, _ = token.split(".")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signature = key.sign(f"{header}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{claims}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def altered(token: str) -> str:
    """The claims of a genuine token with its expiry moved back: the signature no longer fits."""
    header, claims, signature = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    body["exp"] = int(time.time()) - 60
    moved = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    return f"{header}.{moved}.{signature}"


async def refused(stack: Stack, token: str | None) -> str:
    """Connect with ``token``; the connection must fail. Returns what the client was told."""
    seen: list[str] = []

    async def on_error(error: Exception) -> None:
        seen.append(str(error) or type(error).__name__)

    nc = NATS()
    with pytest.raises(Exception) as raised:  # noqa: PT011 -- nats-py raises several kinds
        await nc.connect(
            servers=stack.nats.urls,
            token=token,
            tls=stack.tls(),
            inbox_prefix="_INBOX.team-a.kadence-worker",
            allow_reconnect=False,
            max_reconnect_attempts=0,
            connect_timeout=10,
            error_cb=on_error,
        )
    with contextlib.suppress(Exception):
        await nc.close()
    return " | ".join([str(raised.value), *seen])


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("forged", "error in cryptographic primitive"),
        # A real expired token needs an hour (TokenRequest's minimum is 600 s, and the API
        # server extends short ones); moving a genuine token's exp back breaks its signature.
        ("expiry moved back", "error in cryptographic primitive"),
        ("wrong audience", 'is invalid for the target audiences ["kadence.io/nats"]'),
        ("deleted ServiceAccount", "not found"),
        ("garbage", "invalid bearer token"),
        ("no token", "no token"),
    ],
)
async def test_a_bad_token_is_refused_with_its_reason(stack: Stack, kind: str, reason: str) -> None:
    if kind == "forged":
        token = forged(stack.token("team-a", WORKER_SA))
    elif kind == "expiry moved back":
        token = altered(stack.token("team-a", WORKER_SA))
    elif kind == "wrong audience":
        token = stack.token("team-a", WORKER_SA, audience=None)  # the API server's audience
    elif kind == "deleted ServiceAccount":
        name = f"gone-{secrets.token_hex(3)}"
        apply(stack.kube, service_account("team-a", name))
        token = stack.token("team-a", name)
        kubectl(stack.kube, "delete", "serviceaccount", name, "-n", "team-a", "--wait=true")
    elif kind == "garbage":
        token = "not-a-token"
    else:
        token = None
    callout_log, server_log = stack.callout.log_path, stack.nats.nodes[0].process.log_path
    callout_start, server_start = len(callout_log.read_text()), len(server_log.read_text())
    told = await refused(stack, token)
    # nats-server tells the client only "Authorization Violation" (server/client.go,
    # authViolation); the callout's reason is in its log and, as the response's error, the
    # server's ("Auth callout service returned an error: ...").
    assert "authorization violation" in told.lower(), told

    def new_text(path: Path, start: int, marker: str) -> str | None:
        text = path.read_text()[start:]
        return text if marker in text else None

    refusal = wait_for(
        lambda: new_text(callout_log, callout_start, "refused"),
        timeout=10,
        what="the callout's refusal",
    )
    server = wait_for(
        lambda: new_text(server_log, server_start, "Auth callout service returned an error"),
        timeout=10,
        what="the server's log of the refusal",
    )
    assert reason in refusal, refusal
    assert reason in server, server
    assert token is None or token not in refusal + server


async def test_no_secret_is_ever_logged(stack: Stack) -> None:
    logs = stack.logs()
    assert stack.token("team-a", WORKER_SA)[:40] not in logs
    seed = (stack.workdir / "issuer.seed").read_text()
    password = (stack.workdir / "callout.password").read_text()
    assert seed not in logs
    assert password not in logs


async def eventually(probe: Callable[[], Awaitable[bool]], *, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            if await probe():
                return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {within}s waiting for {what}")


def rotate(path: Path, token: str) -> None:
    """Replace the token in ``path``, as the kubelet does (a new file renamed over the old)."""
    new = path.with_suffix(".new")
    new.write_text(token)
    new.replace(path)


async def test_the_token_file_is_read_again_at_every_reconnect(
    stack: Stack, queues: KadenceClient
) -> None:
    """The kubelet rotates the projected token in place: a reconnect must send the file's
    current token. A bad one in the file is refused; the next good one gets back in."""
    settings = stack.settings("team-a", WORKER_SA)
    assert settings.nats_token_file is not None
    path = Path(settings.nats_token_file)
    log = stack.callout.log_path
    stream_a = constants.stream_name("team-a", QUEUE)

    async def works() -> bool:
        await client.js.stream_info(stream_a)
        return True

    async with await KadenceClient.connect(settings) as client:
        start = len(log.read_text())
        rotate(path, "not-a-token")
        await client.nc.force_reconnect()

        async def refused_once() -> bool:
            return "invalid bearer token" in log.read_text()[start:]

        await eventually(refused_once, within=15, what="the rotated (bad) token to be refused")
        rotate(path, stack.token("team-a", WORKER_SA))
        await eventually(works, within=20, what="a reconnect with the good token")
        assert "admitted" in log.read_text()[start:]


# -- when the callout is down ----------------------------------------------------------------

#: nats-server's ``auth_timeout`` without TLS (``AUTH_TIMEOUT``, server/const.go): how long it
#: waits for the callout's answer before it refuses the CONNECT (server/auth_callout.go).
AUTH_TIMEOUT = 2.0


async def test_without_the_callout_admitted_connections_work_and_new_ones_wait_for_it(
    stack: Stack, tmp_path: Path
) -> None:
    """The callout sits on the path of every CONNECT and of nothing after it. Killed
    (SIGKILL): an admitted worker keeps publishing, fetching and acking, since its
    permissions were fixed when it was admitted; a new connection is refused with
    ``Authorization Violation`` once the server's auth_timeout passes unanswered (no responder
    is not an answer: nats-server sends the request and waits); a worker dropped meanwhile
    (its nats-server restarted) keeps trying. Started again: new connections are admitted and
    the dropped worker gets back in by itself.

    Its own nats-server and callout (the module's Kubernetes objects): killing the shared
    callout or restarting the shared server would break the tests around it."""
    # Without TLS: its waits are the server's auth_timeout (2 s; with TLS nats-server waits its
    # TLS timeout + 1 s, and nats-py returns from connect after 2 s without raising, unadmitted).
    with serving(stack.kube, tmp_path, tls=False) as own:
        stream = constants.stream_name("team-a", QUEUE)
        async with as_operator(own) as op:
            await ensure_queue_stream(op.js, namespace="team-a", queue=QUEUE, ack_wait=30)
        async with as_identity(own, "team-a") as (worker, errors):

            async def round_trip(data: bytes) -> None:
                """Publish on its own Queue, fetch it back, ack it: what a worker does."""
                pull = await worker.js.pull_subscribe_bind(constants.consumer_name(0), stream)
                try:
                    await worker.publish(QUEUE, data, partition=0, timeout=5)
                    (message,) = await pull.fetch(1, timeout=5)
                    assert message.data == data
                    await message.ack_sync(timeout=5)
                finally:
                    await pull.unsubscribe()

            await round_trip(b"before")
            own.callout.kill()
            assert not own.callout.running

            # The admitted connection does not notice.
            await round_trip(b"while the callout is down")

            # A new one is refused, after the server's wait for an answer, and not sooner.
            started = time.monotonic()
            told = await refused(own, own.token("team-a", WORKER_SA))
            waited = time.monotonic() - started
            assert "authorization violation" in told.lower(), told
            assert AUTH_TIMEOUT - 0.2 <= waited < AUTH_TIMEOUT + 5, waited

            # Drop the worker: its nats-server goes away and comes back (same data); every
            # reconnect meets the server's refusal while the callout is down.
            seen = len(errors)
            own.nats.nodes[0].process.stop()
            own.nats.restart_node(0)

            async def refused_again() -> bool:
                return any("authorization" in e.lower() for e in errors[seen:])

            await eventually(refused_again, within=20, what="a refused reconnect")
            assert not worker.nc.is_connected

            # The callout is back: a new connection is admitted...
            start_callout(own.callout)

            token = own.token("team-a", WORKER_SA)

            async def admitted() -> bool:
                # Not as_identity: a worker's settings retry a refused connect for ever.
                nc = await asyncio.wait_for(
                    nats.connect(
                        servers=own.nats.urls,
                        token=token,
                        tls=own.tls(),
                        allow_reconnect=False,
                        max_reconnect_attempts=0,
                        connect_timeout=5,
                    ),
                    10,
                )
                await nc.close()
                return True

            await eventually(admitted, within=15, what="a new connection to be admitted")

            # ... and the dropped worker reconnects by itself and works as before.
            async def back() -> bool:
                return worker.nc.is_connected

            await eventually(back, within=20, what="the dropped worker to reconnect")
            await round_trip(b"after")
            assert worker.nc.stats["reconnects"] >= 1
            permission = [e for e in errors if "permissions violation" in e.lower()]
            assert not permission, permission
