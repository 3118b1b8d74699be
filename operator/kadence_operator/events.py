"""Kubernetes Events for what cluster operators must see (failed runs, bad specs, DLQ entries).

Messages never carry credentials; they name the object and what went wrong.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from kubernetes import client

from kadence_operator import timefmt

logger = logging.getLogger(__name__)
COMPONENT = "kadence-operator"


def _post(api: client.ApiClient, body: dict[str, Any]) -> None:
    meta = body["metadata"]
    namespace = meta.get("namespace") or "default"
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:12]}", "namespace": namespace},
        "involvedObject": {
            "apiVersion": body.get("apiVersion"),
            "kind": body.get("kind"),
            "name": meta["name"],
            "namespace": namespace,
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "reason": body["_reason"],
        "message": body["_message"][:1024],
        "type": body["_type"],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "firstTimestamp": timefmt.rfc3339(),
        "lastTimestamp": timefmt.rfc3339(),
        "count": 1,
    }
    client.CoreV1Api(api).create_namespaced_event(namespace, event)  # type: ignore[arg-type]


async def post(
    api: client.ApiClient,
    *,
    obj: dict[str, Any],
    reason: str,
    message: str,
    warning: bool = True,
) -> None:
    """Post an Event about ``obj`` (a body with apiVersion, kind, metadata); never raises."""
    body = {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": obj.get("metadata", {}),
        "_reason": reason,
        "_message": message,
        "_type": "Warning" if warning else "Normal",
    }
    try:
        await asyncio.to_thread(_post, api, body)
    except Exception as error:  # an Event is best effort; never fail the caller for it
        logger.warning("could not post event %s: %s", reason, error)
