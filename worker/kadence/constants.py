"""Every NATS name Kadence uses: streams, subjects, consumers, headers — in one place.

Kubernetes namespaces and object names are DNS-1123 labels (lower-case letters, digits, ``-``), so
joining them with ``_`` and prefixing upper-case words gives stream names that cannot collide with
each other or with the fixed streams below.
"""

from __future__ import annotations

import hashlib
from typing import Final

#: Version of the wire protocol in :mod:`kadence.protocol`: carried in every message, and the
#: only version decoders accept.
PROTOCOL_VERSION: Final = 1

#: Stream holding every run result; the operator folds it into Job status.
RESULTS_STREAM = "KADENCE_RESULTS"
RESULTS_SUBJECT_PREFIX = "kadence-results"
#: Durable consumer of the results stream used by the operator.
RESULTS_CONSUMER = "kadence-operator"

#: Stream the operator captures JetStream advisories in (max deliveries) so that an operator
#: restart loses none.
ADVISORIES_STREAM = "KADENCE_ADVISORIES"
MAX_DELIVERIES_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"

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


def queue_of_stream(stream: str) -> tuple[str, str] | None:
    """The inverse of :func:`stream_name`: ``KADENCE_<ns>_<queue>`` → ``(ns, queue)``; None for
    other streams (dead letters, results, advisories). Namespaces are DNS labels (no ``_``)."""
    if not stream.startswith("KADENCE_") or stream.startswith(
        ("KADENCE_DLQ_", RESULTS_STREAM, ADVISORIES_STREAM)
    ):
        return None
    namespace, sep, queue = stream[len("KADENCE_") :].partition("_")
    return (namespace, queue) if sep and namespace and queue else None


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


def partition_of(consumer: str) -> int | None:
    """The inverse of :func:`consumer_name`: ``partition-<n>`` → ``n``; None for other names."""
    prefix, sep, number = consumer.partition("-")
    if prefix != "partition" or not sep or not number.isdigit():
        return None
    return int(number)


def results_subject(namespace: str, job: str) -> str:
    return f"{RESULTS_SUBJECT_PREFIX}.{namespace}.{job}"


#: Subjects of the results stream (one subject per Job: ``kadence-results.<namespace>.<job>``).
RESULTS_SUBJECTS = f"{RESULTS_SUBJECT_PREFIX}.>"

#: Stream metadata key holding a Queue's partition count: the stream's subject is a wildcard, so
#: publishers read the count from here (falling back to counting the partition consumers).
PARTITIONS_METADATA_KEY = "kadence.io/partitions"

#: Stands in for the Job name of ad-hoc runs (``kadence enqueue``) in result subjects and output
#: prefixes. It can never clash with a real Job: Kubernetes names cannot contain ``_``.
ADHOC_JOB = "_adhoc"

#: Bucket that run outputs go to unless the run request or ``KADENCE_OUTPUT_BUCKET`` says otherwise.
DEFAULT_OUTPUT_BUCKET = "kadence-outputs"

#: Object names of a task's return value under the attempt's output prefix.
RESULT_JSON_OBJECT = "result.json"
RESULT_BINARY_OBJECT = "result.bin"


def attempt_folder(attempt: int, fencing_token: int | None = None) -> str:
    """The folder of one attempt's outputs under its run's prefix: ``attempt-<n>/``, or
    ``attempt-<n>-fence-<token>/`` for an attempt that holds its Job's Lease.

    Every attempt writes into a folder of its own, so an attempt that resumes after another took
    over its run (a worker frozen past the ack wait or its Lease) never overwrites the objects the
    other reported. The attempt number is JetStream's delivery count, which no two deliveries of
    one message share; the Lease's fencing token (``leaseTransitions``, one more for every new
    holder) also tells apart holders of two messages of one run that got the same count.
    """
    if fencing_token is None:
        return f"attempt-{attempt}/"
    return f"attempt-{attempt}-fence-{fencing_token}/"


#: Prefix of the per-Job Lease (``coordination.k8s.io/v1``) workers hold for locking policies.
LEASE_PREFIX = "kadence-job-"
#: Labels put on the Leases, so the operator can find and clean them up.
LEASE_JOB_LABEL = "kadence.io/job"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "kadence"
#: Annotation a worker sets on a held Lease to ask its holder to stop (concurrencyPolicy Replace).
LEASE_PREEMPT_ANNOTATION = "kadence.io/preempted-by"
#: Annotation on a Job's Lease: the slot (``scheduledAt``) of the newest run that took it under
#: concurrencyPolicy Replace. An older run that finds a newer one there was replaced by it.
LEASE_NEWEST_ANNOTATION = "kadence.io/newest-scheduled-at"

#: Largest Kubernetes object name.
_MAX_NAME = 253


def lease_name(job: str) -> str:
    """The Lease of Job ``job``: ``kadence-job-<job>`` (hashed down if the name is too long)."""
    name = f"{LEASE_PREFIX}{job}"
    if len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha256(job.encode()).hexdigest()[:10]
    return f"{name[: _MAX_NAME - 11].rstrip('-.')}-{digest}"


def partition_of_subject(subject: str) -> int | None:
    """The partition number at the end of a Queue subject, or None if it has none."""
    last = subject.rsplit(".", 1)[-1]
    return int(last) if last.isdigit() else None


def cancel_subject(namespace: str, job: str) -> str:
    """Core-NATS subject on which the operator asks workers to cancel a Job's running attempt
    (``concurrencyPolicy: Replace``); the payload is a :class:`kadence.protocol.CancelRequest`.
    ``job="*"`` is the wildcard a worker subscribes to for its namespace."""
    return f"kadence-cancel.{namespace}.{job}"
