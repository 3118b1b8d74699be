"""kopf's diff-base storage, not built for kinds that have no change handlers.

kopf builds the "essence" of every object on every watch event (a deep copy of the body without
its status and system fields) and compares it with the stored one, for its change handlers
(``on.create``/``on.update``/...) and daemons. Kadence handles Jobs with ``on.event`` only: the
scheduler reads every Job event itself. At 1,000 Jobs firing every second the operator handles
~100 Job events a second, and the copy was ~5 % of its CPU (py-spy, docs/performance.md (a)) for
a result nobody reads. For the kinds named here the essence is empty, stored and fresh alike, so
kopf sees no change; every other kind is handled as by :class:`kopf.AnnotationsDiffBaseStorage`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any, cast

import kopf


class DiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """:class:`kopf.AnnotationsDiffBaseStorage` that skips the kinds in ``untracked``.

    ``untracked`` holds ``(apiVersion, kind)`` pairs. Only kinds without change handlers and
    without timers or daemons may be named: their handlers would never see a change.
    """

    def __init__(self, *, untracked: Collection[tuple[str, str]], prefix: str, key: str) -> None:
        super().__init__(prefix=prefix, key=key)
        self.untracked = frozenset(untracked)

    def _untracked(self, body: kopf.Body) -> bool:
        return (body.get("apiVersion"), body.get("kind")) in self.untracked

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        if self._untracked(body):
            return cast(kopf.BodyEssence, {})
        return super().build(body=body, extra_fields=extra_fields)

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        if self._untracked(body):
            return cast(kopf.BodyEssence, {})
        return super().fetch(body=body)
