"""The NATS permissions an identity gets from its RBAC answers (pure, no servers).

Subjects are checked with NATS's own matching rules (``*`` one token, ``>`` the rest), against
every subject the SDK uses for its own Queue and the same subjects of another team's.
"""

from __future__ import annotations

import pytest

from kadence import constants
from kadence_operator.identity import permissions

STREAM_A = constants.stream_name("team-a", "reports")
STREAM_B = constants.stream_name("team-b", "reports")


def matches(pattern: str, subject: str) -> bool:
    want, have = pattern.split("."), subject.split(".")
    for index, token in enumerate(want):
        if token == ">":
            return len(have) > index
        if index >= len(have) or (token != "*" and token != have[index]):
            return False
    return len(want) == len(have)


def allowed(patterns: tuple[str, ...], subject: str) -> bool:
    return any(matches(p, subject) for p in patterns)


def worker(**kwargs: list[str]) -> permissions.Permissions:
    return permissions.worker_permissions(
        namespace="team-a",
        service_account="kadence-worker",
        consume=kwargs.get("consume", ["reports"]),
        publish=kwargs.get("publish", ["reports"]),
    )


@pytest.mark.parametrize(
    "subject",
    [
        f"$JS.API.CONSUMER.MSG.NEXT.{STREAM_A}.partition-0",
        f"$JS.ACK.{STREAM_A}.partition-0.1.5.5.1733500000000000000.0",
        f"$JS.API.STREAM.INFO.{STREAM_A}",
        f"$JS.API.CONSUMER.LIST.{STREAM_A}",
        f"$JS.API.CONSUMER.INFO.{STREAM_A}.partition-3",
        "kadence-dlq.team-a.reports",
        "kadence-results.team-a.nightly",
        "kadence-results.team-a._adhoc",
        "kadence.team-a.reports.7",
    ],
)
def test_a_worker_may_use_its_own_queue(subject: str) -> None:
    assert allowed(worker().publish, subject)


@pytest.mark.parametrize(
    "subject",
    [
        f"$JS.API.CONSUMER.MSG.NEXT.{STREAM_B}.partition-0",
        f"$JS.ACK.{STREAM_B}.partition-0.1.5.5.1733500000000000000.0",
        f"$JS.API.STREAM.INFO.{STREAM_B}",
        f"$JS.API.STREAM.DELETE.{STREAM_B}",
        f"$JS.API.STREAM.DELETE.{STREAM_A}",
        f"$JS.API.STREAM.PURGE.{STREAM_A}",
        f"$JS.API.CONSUMER.DELETE.{STREAM_A}.partition-0",
        f"$JS.API.CONSUMER.CREATE.{STREAM_A}.x",
        "$JS.API.STREAM.NAMES",
        "kadence-dlq.team-b.reports",
        "kadence-dlq.team-a.other",
        "kadence-results.team-b.x",
        "kadence.team-b.reports.0",
        "kadence.team-a.other.0",
        "kadence-cancel.team-a.nightly",
        "$SYS.REQ.USER.AUTH",
        "_INBOX.team-b.kadence-worker.x",
    ],
)
def test_a_worker_may_not_touch_anything_else(subject: str) -> None:
    assert not allowed(worker().publish, subject)


def test_a_worker_subscribes_to_its_inbox_and_its_namespaces_cancels_only() -> None:
    sub = worker().subscribe
    assert allowed(sub, "_INBOX.team-a.kadence-worker.AbC123.x")
    assert allowed(sub, "kadence-cancel.team-a.nightly")
    for subject in (
        "_INBOX.team-a.other-sa.x",
        "_INBOX.team-b.kadence-worker.x",
        "_INBOX.x",
        "kadence-cancel.team-b.nightly",
        "kadence.team-a.reports.0",
        "kadence-results.team-a.x",
    ):
        assert not allowed(sub, subject), subject
    assert "_INBOX.>" not in sub


def test_consume_and_publish_are_separate_verbs() -> None:
    only_consume = worker(publish=[])
    assert not allowed(only_consume.publish, "kadence.team-a.reports.0")
    assert allowed(only_consume.publish, f"$JS.API.CONSUMER.MSG.NEXT.{STREAM_A}.partition-0")
    only_publish = worker(consume=[])
    assert allowed(only_publish.publish, "kadence.team-a.reports.0")
    assert not allowed(only_publish.publish, f"$JS.API.CONSUMER.MSG.NEXT.{STREAM_A}.partition-0")
    assert not allowed(only_publish.publish, f"$JS.ACK.{STREAM_A}.partition-0.1.1.1.1.0")
    assert not allowed(only_publish.publish, "kadence-results.team-a.x")
    assert only_publish.subscribe == ("_INBOX.team-a.kadence-worker.>",)


def test_nothing_allowed_is_an_explicit_deny_all_publish() -> None:
    nothing = worker(consume=[], publish=[])
    assert nothing.publish == ()
    assert nothing.claims() == {
        "pub": {"deny": [">"]},
        "sub": {"allow": ["_INBOX.team-a.kadence-worker.>"]},
    }


def test_queue_names_that_are_not_one_token_are_left_out() -> None:
    perms = worker(consume=["a.b", "*", ">", "ok"], publish=[])
    assert not any("a.b" in s or s.endswith((".*.*", "_*")) for s in perms.publish)
    assert allowed(perms.publish, "kadence-dlq.team-a.ok")


def test_no_duplicates_and_a_stable_order() -> None:
    perms = worker(consume=["b", "a", "a"], publish=["a", "b"])
    assert len(perms.publish) == len(set(perms.publish))
    assert perms == worker(consume=["a", "b"], publish=["b", "a"])


@pytest.mark.parametrize(("namespace", "name"), [("team-a", "dotted.name"), ("team-a", "UPPER")])
def test_a_service_account_name_must_be_one_token(namespace: str, name: str) -> None:
    with pytest.raises(permissions.UnusableName):
        permissions.inbox_prefix(namespace, name)


def test_the_operator_manages_everything_but_the_system_account() -> None:
    perms = permissions.operator_permissions()
    for subject in (
        f"$JS.API.STREAM.CREATE.{STREAM_B}",
        f"$JS.API.CONSUMER.DURABLE.CREATE.{constants.RESULTS_STREAM}.kadence-operator",
        "kadence.team-b.reports.0",
        "kadence-cancel.team-a.nightly",
        "kadence-dlq.team-a.reports",
    ):
        assert allowed(perms.publish, subject), subject
    assert not allowed(perms.publish, "$SYS.REQ.USER.AUTH")
    assert allowed(perms.subscribe, "_INBOX.abc")
