"""What a namespace's workers may do in S3 is exactly the prefix they write under."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from kadence.config import Settings
from kadence.outputaccess import output_prefix, seaweedfs_actions
from kadence.protocol import JobRef, RunRequest
from kadence.storage import S3Storage, output_location
from kadence_devstack.s3 import S3Identity, S3Server


def test_seaweedfs_actions_cover_only_the_namespace_prefix() -> None:
    assert seaweedfs_actions("team-a") == (
        "Read:kadence-outputs/team-a/*",
        "Write:kadence-outputs/team-a/*",
        "List:kadence-outputs/team-a/*",
    )
    assert seaweedfs_actions("team-a", bucket="reports") == (
        "Read:reports/team-a/*",
        "Write:reports/team-a/*",
        "List:reports/team-a/*",
    )


@pytest.mark.parametrize(
    "job", [JobRef(namespace="team-a", name="nightly", uid="u"), None], ids=["job", "adhoc"]
)
def test_workers_write_under_the_granted_prefix(job: JobRef | None) -> None:
    request = RunRequest(run_id="r1", task="t", job=job)
    location = output_location(request, namespace="team-a", bucket="kadence-outputs", attempt=1)
    assert location.prefix.startswith(output_prefix("team-a"))
    (read, *_) = seaweedfs_actions("team-a")
    assert f"Read:{location.bucket}/{location.prefix}".startswith(read.removesuffix("*"))


@pytest.mark.parametrize("namespace", ["", "*", "team-*", "a/b", "a?", ".", "..", "a\\b"])
def test_names_that_would_widen_the_grant_are_refused(namespace: str) -> None:
    with pytest.raises(ValueError, match="cannot scope S3 access"):
        seaweedfs_actions(namespace)


def test_bucket_with_a_wildcard_is_refused() -> None:
    with pytest.raises(ValueError, match="bucket"):
        seaweedfs_actions("team-a", bucket="kadence-*")


def test_region_setting_reaches_the_store() -> None:
    """``KADENCE_S3_REGION`` spares the client GetBucketLocation, which prefix-limited
    credentials are refused on SeaweedFS."""
    settings = Settings.from_env({"KADENCE_S3_ENDPOINT": "s3:8333", "KADENCE_S3_REGION": "eu-1"})
    assert settings.s3_region == "eu-1"
    store = S3Storage.from_settings(settings)
    assert store is not None
    # ... and to the children of isolation="process" tasks, which rebuild it from its pickle.
    (_, (options,)) = store.__reduce__()
    assert options["region"] == "eu-1"
    assert Settings.from_env({}).s3_region is None


def test_devstack_identities_go_to_a_private_config_file(tmp_path: Path) -> None:
    identity = S3Identity.new("team-a", seaweedfs_actions("team-a"))
    assert identity.secret_key not in repr(identity)
    server = S3Server(tmp_path, identities=[identity])
    path = server._write_config()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {
        "identities": [
            {
                "name": "team-a",
                "credentials": [
                    {"accessKey": identity.access_key, "secretKey": identity.secret_key}
                ],
                "actions": list(seaweedfs_actions("team-a")),
            }
        ]
    }
