"""Per-namespace S3 identities on SeaweedFS: each namespace's workers reach only their own outputs.

A SeaweedFS server of its own, with the admin identity and two limited ones, ``team-a`` and
``team-b``, each granted :func:`kadence.outputaccess.seaweedfs_actions` of its namespace. What is
checked here is what ``docs/security.md`` claims for SeaweedFS.
"""

from __future__ import annotations

import datetime
import http.client
import io
import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from minio import Minio
from minio.credentials.credentials import Credentials
from minio.deleteobjects import DeleteObject
from minio.error import S3Error
from minio.signer import presign_v4
from pydantic import SecretStr

from kadence import App, Context, constants
from kadence.config import Settings
from kadence.outputaccess import seaweedfs_actions
from kadence.protocol import JobRef, RunRequest, RunState, encode
from kadence.storage import S3Storage, StorageError
from kadence_devstack.nats import NatsServer
from kadence_devstack.procs import SetupError, StartError
from kadence_devstack.s3 import S3Identity, S3Server
from tests.conftest import track
from tests.integration.test_worker_support import (
    connected,
    final,
    fresh_queue,
    running_worker,
    unique,
    wait_results,
)

pytestmark = pytest.mark.integration

BUCKET = constants.DEFAULT_OUTPUT_BUCKET
#: Signing for a fixed region spares the client GetBucketLocation, a bucket-level read that a
#: prefix-limited identity is refused (see test_without_a_region_every_request_is_refused).
REGION = "us-east-1"
#: An object of team-b's that team-a tries to reach.
SECRET_KEY = "team-b/nightly/run-1/attempt-1/result.json"
SECRET = b'{"team": "b"}'


@pytest.fixture(scope="module")
def teams() -> dict[str, S3Identity]:
    return {ns: S3Identity.new(ns, seaweedfs_actions(ns)) for ns in ("team-a", "team-b")}


@pytest.fixture(scope="module")
def isolated_s3(
    tmp_path_factory: pytest.TempPathFactory, teams: dict[str, S3Identity]
) -> Iterator[S3Server]:
    """SeaweedFS with the team identities; the admin makes the bucket and one team-b object."""
    server = S3Server(tmp_path_factory.mktemp("s3-isolated"), identities=tuple(teams.values()))
    try:
        try:
            server.start()
        except (SetupError, StartError) as error:
            pytest.fail(f"{type(error).__name__}: {error}", pytrace=False)
        assert server.process is not None
        track([server.process])
        admin = client(server)
        admin.make_bucket(BUCKET)
        admin.put_object(BUCKET, SECRET_KEY, io.BytesIO(SECRET), len(SECRET))
        yield server
    finally:
        server.stop()


def client(server: S3Server, identity: S3Identity | None = None) -> Minio:
    """A minio client as ``identity`` (the admin when None)."""
    if identity is None:
        return Minio(server.endpoint, server.access_key, server.secret_key, secure=False)
    return Minio(
        server.endpoint, identity.access_key, identity.secret_key, secure=False, region=REGION
    )


def settings(server: S3Server, identity: S3Identity, *, region: str | None = REGION) -> Settings:
    """A worker's settings with ``identity``'s keys, as its namespace's Secret would give them."""
    return Settings(
        s3_endpoint=server.endpoint,
        s3_access_key=identity.access_key,
        s3_secret_key=SecretStr(identity.secret_key),
        s3_secure=False,
        s3_region=region,
        namespace=identity.name,
    )


def read(s3: Minio, key: str) -> bytes:
    response = s3.get_object(BUCKET, key)
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


def team_b_unchanged(server: S3Server) -> None:
    admin = client(server)
    assert read(admin, SECRET_KEY) == SECRET
    listed = admin.list_objects(BUCKET, prefix="team-b/", recursive=True)
    assert [o.object_name for o in listed] == [SECRET_KEY]


def test_a_namespace_reads_writes_lists_and_deletes_its_own_prefix(
    isolated_s3: S3Server, teams: dict[str, S3Identity]
) -> None:
    s3 = client(isolated_s3, teams["team-a"])
    key = f"team-a/{unique('job-')}/run-1/attempt-1/report.csv"
    s3.put_object(BUCKET, key, io.BytesIO(b"a,b\n"), 4)
    assert read(s3, key) == b"a,b\n"
    assert s3.stat_object(BUCKET, key).size == 4
    listed = [o.object_name for o in s3.list_objects(BUCKET, prefix="team-a/", recursive=True)]
    assert key in listed
    assert all(name.startswith("team-a/") for name in listed)
    s3.remove_object(BUCKET, key)  # SeaweedFS's Write includes deleting
    assert key not in [
        o.object_name for o in s3.list_objects(BUCKET, prefix="team-a/", recursive=True)
    ]


REFUSED: dict[str, Callable[[Minio], Any]] = {
    "read another namespace's object": lambda s3: read(s3, SECRET_KEY),
    "stat another namespace's object": lambda s3: s3.stat_object(BUCKET, SECRET_KEY),
    "overwrite another namespace's object": lambda s3: s3.put_object(
        BUCKET, SECRET_KEY, io.BytesIO(b"{}"), 2
    ),
    "write a new object under another namespace": lambda s3: s3.put_object(
        BUCKET, "team-b/planted.txt", io.BytesIO(b"x"), 1
    ),
    "delete another namespace's object": lambda s3: s3.remove_object(BUCKET, SECRET_KEY),
    "list another namespace's prefix": lambda s3: list(
        s3.list_objects(BUCKET, prefix="team-b/", recursive=True)
    ),
    "list the bucket root": lambda s3: list(s3.list_objects(BUCKET)),
    "list the whole bucket": lambda s3: list(s3.list_objects(BUCKET, recursive=True)),
    # A prefix that only starts with the namespace's name is another namespace's.
    "write under a longer name": lambda s3: s3.put_object(
        BUCKET, "team-ab/x.txt", io.BytesIO(b"x"), 1
    ),
    "list without the slash": lambda s3: list(s3.list_objects(BUCKET, prefix="team-a")),
    "ask whether the bucket exists": lambda s3: s3.bucket_exists(BUCKET),
    "create a bucket": lambda s3: s3.make_bucket("team-a-own"),
    "write to another bucket": lambda s3: s3.put_object(
        "other-bucket", "team-a/x.txt", io.BytesIO(b"x"), 1
    ),
}


@pytest.mark.parametrize("operation", list(REFUSED))
def test_everything_outside_the_own_prefix_is_refused(
    isolated_s3: S3Server, teams: dict[str, S3Identity], operation: str
) -> None:
    with pytest.raises(S3Error) as refused:
        REFUSED[operation](client(isolated_s3, teams["team-a"]))
    assert refused.value.code == "AccessDenied"
    team_b_unchanged(isolated_s3)


def test_batch_delete_is_refused_per_key(
    isolated_s3: S3Server, teams: dict[str, S3Identity]
) -> None:
    """DeleteObjects names its keys in the body; SeaweedFS checks each one."""
    s3 = client(isolated_s3, teams["team-a"])
    errors = list(s3.remove_objects(BUCKET, [DeleteObject(SECRET_KEY)]))
    assert [(e.name, e.code) for e in errors] == [(SECRET_KEY, "AccessDenied")]
    team_b_unchanged(isolated_s3)


def test_dot_segments_cannot_leave_the_prefix(
    isolated_s3: S3Server, teams: dict[str, S3Identity]
) -> None:
    """``team-a/../team-b/...`` would pass a naive prefix match; SeaweedFS rejects the path.

    The minio client refuses such names itself, so the requests are signed and sent by hand.
    """
    identity = teams["team-a"]
    own = f"team-a/{unique('job-')}/x.txt"
    client(isolated_s3, identity).put_object(BUCKET, own, io.BytesIO(b"mine"), 4)

    def send(method: str, key: str, body: bytes | None = None) -> int:
        url = presign_v4(
            method=method,
            url=urlsplit(f"{isolated_s3.url}/{BUCKET}/{key}"),
            region=REGION,
            credentials=Credentials(identity.access_key, identity.secret_key),
            date=datetime.datetime.now(datetime.UTC),
            expires=60,
        )
        connection = http.client.HTTPConnection(isolated_s3.endpoint, timeout=10)
        try:
            connection.request(method, f"{url.path}?{url.query}", body=body)
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            connection.close()

    assert send("GET", own) == 200  # the hand-made signature is good
    for escape in ("team-a/..", "team-a/%2E%2E", "team-a/./..", "team-a//.."):
        assert send("GET", f"{escape}/{SECRET_KEY.removeprefix('team-b/')}") in (400, 403)
        assert send("GET", f"{escape}/{SECRET_KEY}") in (400, 403)
        assert send("PUT", f"{escape}/{SECRET_KEY}", b"{}") in (400, 403)
    team_b_unchanged(isolated_s3)


def test_the_worker_store_writes_with_prefix_limited_credentials(
    isolated_s3: S3Server, teams: dict[str, S3Identity]
) -> None:
    """:class:`S3Storage` from a namespace's settings: HeadBucket is refused, writes go through
    (also a multipart upload of unknown length), and the other namespace's keys are refused."""
    store = S3Storage.from_settings(settings(isolated_s3, teams["team-a"]))
    assert store is not None
    prefix = f"team-a/{unique('job-')}/run-1/attempt-1/"
    small = store.put(
        BUCKET, prefix + "a.txt", data=io.BytesIO(b"a"), length=1, content_type="text/plain"
    )
    assert small.size == 1
    big = io.BytesIO(b"x" * (17 * 1024 * 1024))  # unknown length, > one 16 MiB part
    streamed = store.put(BUCKET, prefix + "big.bin", data=big, length=-1, content_type="x/y")
    assert streamed.size == 17 * 1024 * 1024
    body = store.open(BUCKET, prefix + "a.txt")
    try:
        assert body.read() == b"a"
    finally:
        body.close()
    with pytest.raises(StorageError, match="AccessDenied"):
        store.put(BUCKET, "team-b/planted.txt", data=io.BytesIO(b"x"), length=1, content_type="x/y")
    with pytest.raises(StorageError, match="AccessDenied"):
        store.open(BUCKET, SECRET_KEY).read()
    team_b_unchanged(isolated_s3)


def test_without_a_region_every_request_is_refused(
    isolated_s3: S3Server, teams: dict[str, S3Identity]
) -> None:
    """Without ``KADENCE_S3_REGION`` the minio client first asks for the bucket's location, which
    SeaweedFS counts as a read of the bucket: a prefix-limited identity gets nothing done."""
    store = S3Storage.from_settings(settings(isolated_s3, teams["team-a"], region=None))
    assert store is not None
    with pytest.raises(StorageError, match="AccessDenied"):
        store.put(
            BUCKET, "team-a/x/y/attempt-1/a.txt", data=io.BytesIO(b"a"), length=1, content_type=""
        )


app = App("s3-isolation")


@app.task("reports.build")
def build(day: str, ctx: Context) -> dict[str, str]:
    ctx.output.put("report.csv", f"day\n{day}\n")
    return {"day": day}


async def test_a_worker_with_its_namespace_credentials_stores_its_outputs(
    nats_server: NatsServer, isolated_s3: S3Server, teams: dict[str, S3Identity]
) -> None:
    team_a = teams["team-a"]
    store = S3Storage.from_settings(settings(isolated_s3, team_a))
    job = JobRef(namespace="team-a", name=unique("nightly-"), uid="uid-a")
    async with (
        connected(nats_server, namespace="team-a") as nats,
        fresh_queue(nats) as queue,
        running_worker(app, nats_server, queue=queue, storage=store),
    ):
        request = RunRequest(
            run_id=unique("run-"), task="reports.build", payload="2024-05-01", job=job
        )
        await nats.publish(queue.name, encode(request), msg_id=request.run_id)
        results = await wait_results(nats, final, job=job.name, run_id=request.run_id)
    done = results[-1]
    assert done.state is RunState.SUCCEEDED, done
    prefix = f"team-a/{job.name}/{request.run_id}/attempt-1/"
    assert [o.uri for o in done.outputs] == [
        f"s3://{BUCKET}/{prefix}report.csv",
        f"s3://{BUCKET}/{prefix}result.json",
    ]
    own = client(isolated_s3, team_a)
    assert read(own, prefix + "report.csv") == b"day\n2024-05-01\n"
    assert json.loads(read(own, prefix + "result.json")) == {"day": "2024-05-01"}
    # ... and team-b's workers cannot read them.
    with pytest.raises(S3Error) as refused:
        read(client(isolated_s3, teams["team-b"]), prefix + "report.csv")
    assert refused.value.code == "AccessDenied"
