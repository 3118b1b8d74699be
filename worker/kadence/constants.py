"""Every NATS name Kadence uses: streams, subjects, consumers, headers — in one place.

Kubernetes namespaces and object names are DNS-1123 labels (lower-case letters, digits, ``-``), so
joining them with ``_`` and prefixing upper-case words gives stream names that cannot collide with
each other or with the fixed streams below.
"""

from __future__ import annotations

#: Version of the wire protocol in :mod:`kadence.protocol`; carried in every message.
PROTOCOL_VERSION = 1

#: Stream holding every run result; the operator folds it into Job status.
RESULTS_STREAM = "KADENCE_RESULTS"
RESULTS_SUBJECT_PREFIX = "kadence-results"
#: Durable consumer of the results stream used by the operator.
RESULTS_CONSUMER = "kadence-operator"

#: Stream the operator captures JetStream advisories in (max-deliveries, terminated) so that an
#: operator restart loses none.
ADVISORIES_STREAM = "KADENCE_ADVISORIES"
MAX_DELIVERIES_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"
TERMINATED_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED"

#: Headers
MSG_ID_HEADER = "Nats-Msg-Id"  # JetStream de-duplication
DLQ_REASON_HEADER = "Kadence-Dead-Reason"
DLQ_SUBJECT_HEADER = "Kadence-Original-Subject"
DLQ_DELIVERIES_HEADER = "Kadence-Deliveries"
DLQ_ERROR_HEADER = "Kadence-Last-Error"
DLQ_STREAM_SEQ_HEADER = "Kadence-Original-Sequence"


def stream_name(namespace: str, queue: str) -> str:
    """The work stream of Queue ``namespace/queue``: ``KADENCE_<namespace>_<queue>``."""
    return f"KADENCE_{namespace}_{queue}"


def dlq_stream_name(namespace: str, queue: str) -> str:
    """The dead-letter stream of a Queue: ``KADENCE_DLQ_<namespace>_<queue>``."""
    return f"KADENCE_DLQ_{namespace}_{queue}"


def subject(namespace: str, queue: str, partition: int) -> str:
    """Subject of one partition of a Queue: ``kadence.<namespace>.<queue>.<partition>``."""
    return f"kadence.{namespace}.{queue}.{partition}"


def subjects_wildcard(namespace: str, queue: str) -> str:
    return f"kadence.{namespace}.{queue}.*"


def dlq_subject(namespace: str, queue: str) -> str:
    return f"kadence-dlq.{namespace}.{queue}"


def consumer_name(partition: int) -> str:
    """The durable pull consumer of one partition (one per partition, shared by all workers)."""
    return f"partition-{partition}"


def results_subject(namespace: str, job: str) -> str:
    return f"{RESULTS_SUBJECT_PREFIX}.{namespace}.{job}"
