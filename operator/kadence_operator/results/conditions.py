"""Kubernetes-style conditions on plain status dicts (pure).

``lastTransitionTime`` changes only when ``status`` does, as the API conventions ask.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kadence_operator import timefmt


def set_condition(
    conditions: list[dict[str, Any]],
    *,
    type_: str,
    status: bool | str,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None = None,
) -> list[dict[str, Any]]:
    """A new list with condition ``type_`` set; the others are kept as they are."""
    value = status if isinstance(status, str) else ("True" if status else "False")
    old = next((c for c in conditions if c.get("type") == type_), None)
    transition = (
        old["lastTransitionTime"]
        if old is not None and old.get("status") == value and old.get("lastTransitionTime")
        else timefmt.rfc3339(now)
    )
    new: dict[str, Any] = {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
    }
    if generation is not None:
        new["observedGeneration"] = generation
    return [c for c in conditions if c.get("type") != type_] + [new]


def condition(conditions: list[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)
