"""The NATS permissions of an identity: which subjects it may publish to and subscribe to.

A pure function of what Kubernetes decided (the identity, the Queues RBAC lets it ``consume``
from and ``publish`` to, whether it is the operator) to the allow lists of a NATS user JWT.
Nothing here does I/O; :mod:`kadence_operator.identity.callout` applies the result.

Every subject is one that the SDK actually uses (``kadence/consumer.py``, ``fetching.py``,
``requests.py``, ``settling.py``, ``client.py``, ``runtime.py``, ``streams.py``), scoped to the
streams of the allowed Queues and the identity's namespace, so that a worker of one team can
neither read, ack, publish to, dead-letter into nor report results for another team's Queues and
Jobs, and cannot see anyone else's replies: its inbox is ``_INBOX.<namespace>.<serviceaccount>``,
never the shared ``_INBOX.>``. Allow lists only; anything not listed is refused by the server.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kadence import constants

#: The account users are placed in: nats-server's global account in its config (non-operator)
#: mode, where the Kadence streams live.
GLOBAL_ACCOUNT = "$G"

#: What a subject token made of a Kubernetes name may contain. Namespaces are DNS labels, but
#: ServiceAccount and Queue names are DNS subdomains, whose dots would split a subject token.
_TOKEN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class UnusableName(ValueError):
    """A namespace or ServiceAccount name that cannot be a single NATS subject token."""


@dataclass(frozen=True)
class Permissions:
    """A NATS user's allow lists (the ``pub``/``sub`` of a user JWT's ``nats`` claims)."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]

    def claims(self) -> dict[str, Any]:
        """The ``pub``/``sub`` object of a user JWT (jwt/v2 ``Permissions``).

        An empty allow list would mean "no restriction" to nats-server, so an empty one is sent
        as a deny of everything instead.
        """

        def one(allow: tuple[str, ...]) -> dict[str, list[str]]:
            return {"allow": list(allow)} if allow else {"deny": [">"]}

        return {"pub": one(self.publish), "sub": one(self.subscribe)}


def is_token(name: str) -> bool:
    """Whether a Kubernetes name can stand as one subject token (no dots, no wildcards)."""
    return bool(_TOKEN.match(name))


def inbox_prefix(namespace: str, service_account: str) -> str:
    """The reply inbox prefix of an identity: ``_INBOX.<namespace>.<serviceaccount>``.

    Set on the client with ``KADENCE_NATS_INBOX_PREFIX``; only that identity may subscribe
    below it, so its replies (pulled runs, acks' confirmations, PubAcks) are its own.
    """
    for name in (namespace, service_account):
        if not is_token(name):
            raise UnusableName(f"{name!r} cannot be a NATS subject token")
    return f"_INBOX.{namespace}.{service_account}"


def _consume(namespace: str, queue: str) -> list[str]:
    """Publish subjects a worker needs to serve a Queue (kadence.fetching, consumer, settling)."""
    stream = constants.stream_name(namespace, queue)
    return [
        # Pull requests to the partition consumers (kadence.consumer.Pull).
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.*",
        # Acks, naks, in-progress and terms: the reply subjects of the delivered messages.
        f"$JS.ACK.{stream}.>",
        # Listing the partition consumers and reading their ack wait (kadence.fetching).
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.CONSUMER.LIST.{stream}",
        f"$JS.API.CONSUMER.NAMES.{stream}",
        f"$JS.API.CONSUMER.INFO.{stream}.*",
        # Dead-lettering a run that exhausted its attempts (kadence.settling).
        constants.dlq_subject(namespace, queue),
    ]


def _publish(namespace: str, queue: str) -> list[str]:
    """Publish subjects a client needs to enqueue runs to a Queue (kadence.client.publish)."""
    stream = constants.stream_name(namespace, queue)
    return [
        constants.subjects_wildcard(namespace, queue),
        # The partition count: stream metadata, else the partition consumers (kadence.streams).
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.CONSUMER.LIST.{stream}",
        f"$JS.API.CONSUMER.INFO.{stream}.*",
    ]


def _unique(subjects: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(subjects))


def worker_permissions(
    *,
    namespace: str,
    service_account: str,
    consume: Iterable[str],
    publish: Iterable[str],
) -> Permissions:
    """The permissions of a worker or client identity ``namespace/service_account``.

    ``consume`` and ``publish`` are the names of the namespace's Queues that RBAC allows for
    each verb; names that cannot be a subject token are left out (they could not be a Queue's
    stream either). An identity allowed nothing may still connect, and can only subscribe to its
    own inbox: it learns nothing and changes nothing.
    """
    inbox = inbox_prefix(namespace, service_account)
    consumed = sorted({q for q in consume if is_token(q)})
    published = sorted({q for q in publish if is_token(q)})
    pub: list[str] = []
    sub = [f"{inbox}.>"]
    for queue in consumed:
        pub += _consume(namespace, queue)
    if consumed:
        # Results of the runs it executes: every Job it can run is in its namespace.
        pub.append(f"{constants.RESULTS_SUBJECT_PREFIX}.{namespace}.>")
        # The operator's cancel requests for its namespace's Jobs (kadence.runtime).
        sub.append(constants.cancel_subject(namespace, "*"))
    for queue in published:
        pub += _publish(namespace, queue)
    return Permissions(publish=_unique(pub), subscribe=_unique(sub))


def operator_permissions() -> Permissions:
    """The operator's: manage every stream and consumer, dispatch to every Queue, fold every
    result, dead-letter and cancel anywhere; replies on nats-py's default inbox. No ``$SYS``."""
    return Permissions(
        publish=(
            "$JS.API.>",
            "$JS.ACK.>",
            "$JS.FC.>",
            "kadence.>",
            f"{constants.RESULTS_SUBJECT_PREFIX}.>",
            "kadence-dlq.>",
            "kadence-cancel.>",
        ),
        subscribe=("_INBOX.>", "$JS.EVENT.>"),
    )
