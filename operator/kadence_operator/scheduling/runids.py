"""Deterministic run ids, used as the NATS ``Nats-Msg-Id`` so that JetStream drops duplicates.

A run id is a prefix and the first 20 hex digits (80 bits) of a SHA-256 over a versioned
encoding of the Job uid and what caused the run:

* ``s-<hex>``: a scheduled slot, ``sha256("kadence/run/slot/v1" NUL job_uid NUL slot)`` where the
  slot is written in UTC with microseconds (``2026-01-01T00:00:00.000000Z``), so the same instant
  in any time zone gives the same id. Backfill deliberately uses the same id (there is no
  separate backfill prefix): backfilling a slot that already ran, or that two replicas both
  dispatch, dedupes instead of running twice.
* ``t-<hex>``: an external trigger, ``sha256("kadence/run/trigger/v1" NUL job_uid NUL value)``
  for a caller-chosen trigger value (an idempotency key, an event id).

Ids are 22 characters of ``[a-z0-9-]``, starting with a letter: valid DNS labels, usable in
Kubernetes object names and as label values. JetStream only dedupes within the stream's
duplicate window, so older duplicates must also be caught from the Job's recorded runs.

This is a purely computational module with no side-effects.
"""

from __future__ import annotations

from datetime import datetime

from kadence_operator.scheduling._hashing import digest, instant_key

__all__ = ["RUN_ID_HEX_DIGITS", "run_id_for_slot", "run_id_for_trigger"]

#: How many hex digits of the SHA-256 a run id keeps (80 bits).
RUN_ID_HEX_DIGITS = 20


def run_id_for_slot(job_uid: str, slot: datetime) -> str:
    """The run id of the scheduled (or backfilled) run of ``slot``: ``"s-"`` + 20 hex digits.

    ``slot`` must be timezone-aware; only the instant matters, not its time zone.
    """
    return (
        "s-" + digest("kadence/run/slot/v1", job_uid, instant_key(slot)).hex()[:RUN_ID_HEX_DIGITS]
    )


def run_id_for_trigger(job_uid: str, trigger_value: str) -> str:
    """The run id of the run caused by the trigger ``trigger_value``: ``"t-"`` + 20 hex digits."""
    return "t-" + digest("kadence/run/trigger/v1", job_uid, trigger_value).hex()[:RUN_ID_HEX_DIGITS]
