"""Settings of workers and clients, read from ``KADENCE_*`` environment variables.

The operator's worker Deployment and users' shells configure Kadence the same way: through the
environment. :meth:`Settings.from_env` reads it once into an immutable model; secrets are
:class:`~pydantic.SecretStr`, so neither ``repr`` nor logs ever show them.

===============================  =================================================================
variable                         meaning
===============================  =================================================================
``KADENCE_NATS_URL``             NATS server URL(s), comma-separated (default nats://127.0.0.1:4222)
``KADENCE_NATS_USER``            user name (with ``KADENCE_NATS_PASSWORD``)
``KADENCE_NATS_PASSWORD``        password
``KADENCE_NATS_TOKEN``           token authentication
``KADENCE_NATS_TOKEN_FILE``      file holding the token, read again at every (re)connect: a
                                 projected ServiceAccount token, which the kubelet rotates
``KADENCE_NATS_INBOX_PREFIX``    prefix of reply inboxes (default ``_INBOX``); with the auth
                                 callout ``_INBOX.<namespace>.<serviceaccount>``, the only inbox
                                 that identity may subscribe to
``KADENCE_NATS_CREDS``           path of a ``.creds`` file (JWT + NKey)
``KADENCE_NATS_CA``              path of a CA bundle; enables TLS
``KADENCE_S3_ENDPOINT``          ``host:port`` of the S3 service; unset: no output storage
``KADENCE_S3_ACCESS_KEY``        access key
``KADENCE_S3_SECRET_KEY``        secret key
``KADENCE_S3_SECURE``            use HTTPS (default true)
``KADENCE_S3_REGION``            region to sign requests for; unset: asked of the bucket
                                 (GetBucketLocation), which credentials limited to a key prefix
                                 may not be allowed to do (see docs/security.md)
``KADENCE_OUTPUT_BUCKET``        bucket for run outputs (default ``kadence-outputs``)
``KADENCE_NAMESPACE``            namespace of the Queue served or published to (default ``default``)
``KADENCE_WORKER_NAME``          identity in results and Leases (default ``<hostname>-<pid>``)
``KUBECONFIG``                   kubeconfig for Leases; unset: in-cluster service account
===============================  =================================================================
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import os
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from kadence.constants import DEFAULT_OUTPUT_BUCKET

#: The format of the worker's log lines (``kadence worker``, and the task processes it starts).
LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def default_worker_name() -> str:
    """``<hostname>-<pid>``: the pod name in Kubernetes, unique among processes of one host."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _parse_bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{name} must be true or false, got {value!r}")


class Settings(BaseModel):
    """Connection settings for NATS, S3 and Kubernetes, and the worker's identity."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    nats_urls: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    nats_user: str | None = None
    nats_password: SecretStr | None = None
    nats_token: SecretStr | None = None
    nats_token_file: str | None = None
    nats_inbox_prefix: str | None = None
    nats_creds: str | None = None
    nats_ca: str | None = None
    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: SecretStr | None = None
    s3_secure: bool = True
    s3_region: str | None = None
    output_bucket: str = DEFAULT_OUTPUT_BUCKET
    namespace: str = "default"
    kubeconfig: str | None = None
    worker_name: str = Field(default_factory=default_worker_name)

    @field_validator("nats_urls")
    @classmethod
    def _some_url(cls, urls: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = tuple(u.strip() for u in urls if u.strip())
        if not cleaned:
            raise ValueError("at least one NATS URL is required")
        return cleaned

    @field_validator("nats_inbox_prefix")
    @classmethod
    def _inbox_prefix(cls, prefix: str | None) -> str | None:
        if prefix is None:
            return None
        prefix = prefix.strip().rstrip(".")
        if not prefix or any(c in prefix for c in " *>") or ".." in prefix:
            raise ValueError(f"not a subject prefix: {prefix!r}")
        return prefix

    @model_validator(mode="after")
    def _one_token(self) -> Settings:
        if self.nats_token is not None and self.nats_token_file is not None:
            raise ValueError("KADENCE_NATS_TOKEN and KADENCE_NATS_TOKEN_FILE exclude each other")
        return self

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``environ`` (default ``os.environ``); keyword overrides win."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name)
            return value if value not in (None, "") else None

        values: dict[str, Any] = {}
        if (urls := get("KADENCE_NATS_URL")) is not None:
            values["nats_urls"] = tuple(urls.split(","))
        plain = {
            "nats_user": "KADENCE_NATS_USER",
            "nats_password": "KADENCE_NATS_PASSWORD",
            "nats_token": "KADENCE_NATS_TOKEN",
            "nats_token_file": "KADENCE_NATS_TOKEN_FILE",
            "nats_inbox_prefix": "KADENCE_NATS_INBOX_PREFIX",
            "nats_creds": "KADENCE_NATS_CREDS",
            "nats_ca": "KADENCE_NATS_CA",
            "s3_endpoint": "KADENCE_S3_ENDPOINT",
            "s3_access_key": "KADENCE_S3_ACCESS_KEY",
            "s3_secret_key": "KADENCE_S3_SECRET_KEY",
            "s3_region": "KADENCE_S3_REGION",
            "output_bucket": "KADENCE_OUTPUT_BUCKET",
            "namespace": "KADENCE_NAMESPACE",
            "worker_name": "KADENCE_WORKER_NAME",
            "kubeconfig": "KUBECONFIG",
        }
        for field, variable in plain.items():
            if (value := get(variable)) is not None:
                values[field] = value
        if (secure := get("KADENCE_S3_SECURE")) is not None:
            values["s3_secure"] = _parse_bool("KADENCE_S3_SECURE", secure)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)

    @property
    def storage_configured(self) -> bool:
        return self.s3_endpoint is not None

    def nats_options(self) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect``: servers, credentials, TLS, reconnects."""
        options: dict[str, Any] = {
            "servers": list(self.nats_urls),
            "name": f"kadence {self.worker_name}",
            # A worker must outlive NATS restarts and rolling upgrades: never give up reconnecting.
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 1,
        }
        if self.nats_user is not None:
            options["user"] = self.nats_user
        if self.nats_password is not None:
            options["password"] = self.nats_password.get_secret_value()
        if self.nats_token is not None:
            options["token"] = self.nats_token.get_secret_value()
        if self.nats_token_file is not None:
            # nats-py calls a callable token at every CONNECT, reconnects included, so a token
            # the kubelet rotated is the one sent.
            options["token"] = functools.partial(read_token, self.nats_token_file)
        if self.nats_inbox_prefix is not None:
            # Every reply inbox of the client (nats-py's requests, JetStream API calls, pull
            # subscriptions, and Kadence's own through ``nc.new_inbox``) starts with it.
            options["inbox_prefix"] = self.nats_inbox_prefix
        if self.nats_creds is not None:
            options["user_credentials"] = self.nats_creds
        if self.nats_ca is not None:
            options["tls"] = ssl.create_default_context(cafile=self.nats_ca)
        return options


def read_token(path: str) -> str:
    """The token in ``path`` (surrounding whitespace removed), read afresh on every call."""
    return Path(path).read_text().strip()


def nats_event_callbacks(
    log: logging.Logger, *, closing: Callable[[], bool]
) -> dict[str, Callable[..., Awaitable[None]]]:
    """``error_cb``/``disconnected_cb``/``reconnected_cb`` for ``nats.connect``: one log line
    each. Without them nats-py logs every failed (re)connect with a full traceback — a worker or
    operator starting before its NATS server is up printed a page of them. ``closing`` tells a
    disconnect we asked for (close, drain) from one we did not."""

    async def on_error(error: Exception) -> None:
        log.warning("NATS: %s", error or type(error).__name__)

    async def on_disconnect() -> None:
        if not closing():
            log.warning("disconnected from NATS; reconnecting")

    async def on_reconnect() -> None:
        log.info("reconnected to NATS")

    return {"error_cb": on_error, "disconnected_cb": on_disconnect, "reconnected_cb": on_reconnect}


def user_agent(component: str) -> str:
    """The ``User-Agent`` of a Kadence component's Kubernetes requests: ``<component>/<version>``.

    The API server names the field manager of a write after it (the part before ``/``), so
    ``kubectl get -o yaml --show-managed-fields`` and audit logs show ``kadence-operator`` or
    ``kadence-worker`` instead of the client library's generic name.
    """
    try:
        version = importlib.metadata.version("kadence")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return f"{component}/{version}"
