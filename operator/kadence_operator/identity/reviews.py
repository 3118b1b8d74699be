"""What Kubernetes says about a token: who it is (TokenReview) and which Queues it may use
(SubjectAccessReview for the verbs ``consume`` and ``publish`` on ``queues.kadence.io``).

The official client is synchronous; :class:`Reviewer`'s methods are meant to run in a thread
(:func:`asyncio.to_thread`), as the operator's other loops do (:mod:`kadence_operator.kube`).
Nothing is cached: a Role granted or removed counts from the next connection on.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client

GROUP = "kadence.io"
VERSION = "v1alpha1"
PLURAL = "queues"
#: The custom RBAC verbs on ``queues.kadence.io`` that the callout asks about.
CONSUME = "consume"
PUBLISH = "publish"

_SA_PREFIX = "system:serviceaccount:"


class Refused(Exception):
    """The token does not identify a ServiceAccount for this audience; the message says why
    (it goes back to nats-server as the response's ``error``, and never contains the token)."""


@dataclass(frozen=True)
class Reviewed:
    """An authenticated ServiceAccount, as TokenReview returned it (SubjectAccessReview needs
    the user's groups, uid and extra too, so that group-bound Roles count)."""

    namespace: str
    service_account: str
    username: str
    uid: str | None
    groups: tuple[str, ...]
    extra: dict[str, list[str]] = field(default_factory=dict)
    #: The token's own ``exp`` (seconds since the epoch), read after the review accepted it.
    expires: int | None = None


@dataclass(frozen=True)
class QueueAccess:
    consume: tuple[str, ...]
    publish: tuple[str, ...]


def _expiry(token: str) -> int | None:
    """The ``exp`` claim of a (reviewed, so genuine) Kubernetes JWT, or None."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return exp if isinstance(exp, int) else None


class Reviewer:
    """TokenReview, the Queues of a namespace and SubjectAccessReview, through one API client."""

    def __init__(self, api: client.ApiClient, *, audience: str) -> None:
        self.audience = audience
        self._authn = client.AuthenticationV1Api(api)
        self._authz = client.AuthorizationV1Api(api)
        self._custom = client.CustomObjectsApi(api)

    def review_token(self, token: str) -> Reviewed:
        """Who ``token`` is; :class:`Refused` unless the API server authenticates it for
        :attr:`audience` as a ServiceAccount (expired, forged, wrong audience, deleted
        ServiceAccount: the API server's own reason is passed on)."""
        review = client.V1TokenReview(
            spec=client.V1TokenReviewSpec(token=token, audiences=[self.audience])
        )
        result: Any = self._authn.create_token_review(review)
        status = result.status
        if status is None or not status.authenticated:
            reason = (status.error if status is not None else None) or "not authenticated"
            raise Refused(f"token rejected by Kubernetes: {reason}")
        if self.audience not in (status.audiences or []):
            raise Refused(f"token is not for audience {self.audience}")
        user = status.user
        username = str(user.username or "")
        if not username.startswith(_SA_PREFIX):
            raise Refused("token is not a ServiceAccount's")
        namespace, _, name = username[len(_SA_PREFIX) :].partition(":")
        if not namespace or not name:
            raise Refused("token is not a ServiceAccount's")
        return Reviewed(
            namespace=namespace,
            service_account=name,
            username=username,
            uid=user.uid,
            groups=tuple(user.groups or ()),
            extra={k: list(v) for k, v in (user.extra or {}).items()},
            expires=_expiry(token),
        )

    def queues(self, namespace: str) -> list[str]:
        """The names of the Queue objects in ``namespace``."""
        listing: Any = self._custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        return sorted(str(item["metadata"]["name"]) for item in listing.get("items", []))

    def allowed(self, who: Reviewed, *, namespace: str, queue: str, verb: str) -> bool:
        """Whether RBAC lets ``who`` do ``verb`` on ``queues/<queue>`` in ``namespace``."""
        review = client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(
                user=who.username,
                uid=who.uid,
                groups=list(who.groups),
                extra=who.extra or None,
                resource_attributes=client.V1ResourceAttributes(
                    namespace=namespace, verb=verb, group=GROUP, resource=PLURAL, name=queue
                ),
            )
        )
        result: Any = self._authz.create_subject_access_review(review)
        return bool(result.status is not None and result.status.allowed)

    def queue_access(self, who: Reviewed) -> QueueAccess:
        """The Queues of ``who``'s own namespace it may consume from and publish to."""
        names = self.queues(who.namespace)
        return QueueAccess(
            consume=tuple(
                q
                for q in names
                if self.allowed(who, namespace=who.namespace, queue=q, verb=CONSUME)
            ),
            publish=tuple(
                q
                for q in names
                if self.allowed(who, namespace=who.namespace, queue=q, verb=PUBLISH)
            ),
        )
