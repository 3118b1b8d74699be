"""Operator settings, read once from the environment (the Helm chart sets these variables).

Connection settings for NATS and S3 are the SDK's (:mod:`kadence.config`); this module holds what
only the operator needs: who it is, where its shard Leases live, and how often it does things.
Secrets never pass through here.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kadence import constants


class SettingsError(ValueError):
    """An environment variable has a bad value; the message names it."""


class OperatorSettings(BaseModel):
    """Every knob of the operator. Environment variable names are ``KADENCE_`` + upper-case name."""

    model_config = ConfigDict(frozen=True)

    #: Namespace of the operator's own shard Leases (the pod's namespace in a cluster).
    operator_namespace: str = "default"
    #: This replica's identity in Lease holders (the pod name in a cluster).
    operator_id: str = Field(default_factory=socket.gethostname)
    #: Number of scheduler shards (each one a Lease); Jobs hash onto them by uid.
    shards: int = Field(default=32, ge=1, le=1024)
    #: Shard Lease duration, renew period and retry period in seconds.
    lease_duration: float = Field(default=15.0, gt=0)
    lease_renew: float = Field(default=10.0, gt=0)
    lease_retry: float = Field(default=2.0, gt=0)
    #: At most one status PATCH per Job per this many seconds.
    status_interval: float = Field(default=5.0, ge=0)
    #: Seconds before a burst of fires during which status writes and result folding wait, so
    #: the burst has the event loop and the API server's CPU to itself (0: never wait).
    dispatch_quiet: float = Field(default=0.2, ge=0, le=2.0)
    #: How many fires due within ``dispatch_quiet`` make a burst.
    dispatch_burst: int = Field(default=100, ge=1)
    #: How many on-time fires due at one instant (within 2 ms) the scheduler prepares ahead of
    #: it and hands to NATS in one write when it comes (0: never; fewer fire one by one).
    dispatch_stage: int = Field(default=16, ge=0)
    #: How often each Queue's status is refreshed from JetStream.
    queue_status_interval: float = Field(default=10.0, gt=0)
    #: How often each Queue's stream and consumers are checked for drift and restored.
    drift_interval: float = Field(default=30.0, gt=0)
    #: Default bucket for Job outputs when a Job does not name one.
    output_bucket: str = constants.DEFAULT_OUTPUT_BUCKET
    #: JetStream duplicate window for run requests, seconds; at least 2 x lease_duration.
    duplicate_window: float = Field(default=120.0, gt=0)
    #: How long a result fetched by an operator that died stays hidden before JetStream
    #: redelivers it (to a restarted operator or another replica). A result waiting for its
    #: status write is kept claimed with in-progress acks however long the write takes.
    results_ack_wait: float = Field(default=15.0, ge=3)
    #: Prometheus metrics port (0 = off).
    metrics_port: int = Field(default=0, ge=0, le=65535)
    #: Name of a Secret in each Queue's namespace whose keys become the environment of the
    #: operator-run workers (``envFrom``, optional): KADENCE_S3_ACCESS_KEY, KADENCE_S3_SECRET_KEY,
    #: KADENCE_NATS_USER, KADENCE_NATS_PASSWORD, KADENCE_NATS_TOKEN, … Empty: none.
    worker_secret: str | None = Field(
        default=None, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
    )

    #: NATS identities: the audience of the ServiceAccount token the operator-run workers present
    #: to NATS (the auth callout's, ``kadence.io/nats``). Their pods get it projected and rotated;
    #: the Secret above then needs no NATS credentials. Empty: shared credentials.
    nats_token_audience: str | None = Field(default=None, max_length=253)

    @model_validator(mode="after")
    def _check_timings(self) -> OperatorSettings:
        if self.lease_renew >= self.lease_duration:
            raise ValueError(
                f"KADENCE_LEASE_RENEW ({self.lease_renew}) must be shorter than "
                f"KADENCE_LEASE_DURATION ({self.lease_duration})"
            )
        if self.duplicate_window < 2 * self.lease_duration:
            raise ValueError(
                f"KADENCE_DUPLICATE_WINDOW ({self.duplicate_window}) must be at least twice "
                f"KADENCE_LEASE_DURATION ({self.lease_duration}) so a failover cannot publish a "
                f"slot twice"
            )
        return self

    def kopf_identity(self) -> str:
        """kopf's identity of this process: ``KADENCE_OPERATOR_ID`` (the chart sets the pod name),
        else ``<hostname>-<pid>``.

        Given none, kopf makes one from ``getpass.getuser()``, which raises ``KeyError`` where the
        uid has no passwd entry — under the chart's ``runAsUser: 65532`` the image has none, and
        the operator died at start. kopf runs standalone here (no peering), so the identity only
        names this process; it must come from the environment, never from the user database.
        """
        if "operator_id" in self.model_fields_set:
            return self.operator_id
        return f"{self.operator_id}-{os.getpid()}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorSettings:
        env = os.environ if env is None else env
        values: dict[str, str] = {}
        for name in cls.model_fields:
            key = f"KADENCE_{name.upper()}"
            if key in env and env[key] != "":
                values[name] = env[key]
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            problems = []
            for item in error.errors():
                loc = item["loc"]
                where = f"KADENCE_{str(loc[0]).upper()}" if loc else "settings"
                problems.append(f"{where}: {item['msg']}")
            raise SettingsError("; ".join(problems)) from None
