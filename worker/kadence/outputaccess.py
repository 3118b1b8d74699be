"""What S3 access one namespace's workers need, and no more (pure).

Every worker writes its run outputs under ``<namespace>/`` of the output bucket
(:func:`kadence.storage.output_location`: ``<namespace>/<job>/<runId>/attempt-<n>/``). With one
shared access key, any worker can read, overwrite or delete every namespace's outputs. Giving the
workers of each namespace an S3 identity limited to their own prefix closes that; this module says
what that identity may do, so the devstack, the tests and ``docs/security.md`` grant the same thing.

The actions are SeaweedFS's static identity actions (the ``identities`` of its ``-s3.config``
file): ``<Action>:<bucket>/<key pattern>``, where a pattern with ``*`` is matched against
``<bucket>/<object key>`` (for a listing, the listing's prefix). ``Write`` also covers deleting
objects, which SeaweedFS does not grant apart from writing. Listing the bucket root, another
namespace's prefix, or asking whether the bucket exists is refused: nothing here grants an action
on the bucket alone.
"""

from __future__ import annotations

from kadence import constants

#: Characters that would widen a SeaweedFS action pattern or leave the prefix.
_UNSAFE = frozenset("*?/\\")


def output_prefix(namespace: str) -> str:
    """The key prefix all of ``namespace``'s run outputs go under: ``<namespace>/``.

    Only for runs that do not name their own output location (``RunRequest.output``): those go
    where the request says, which a prefix-limited identity may refuse.
    """
    return f"{_checked('namespace', namespace)}/"


def seaweedfs_actions(
    namespace: str, *, bucket: str = constants.DEFAULT_OUTPUT_BUCKET
) -> tuple[str, ...]:
    """SeaweedFS identity actions for ``namespace``'s workers: read, write (and delete) and list
    objects under ``<bucket>/<namespace>/``, nothing else.

    The trailing ``/`` before ``*`` matters: ``team-a*`` would also match ``team-ab/``.
    """
    target = f"{_checked('bucket', bucket)}/{output_prefix(namespace)}*"
    return (f"Read:{target}", f"Write:{target}", f"List:{target}")


def _checked(what: str, name: str) -> str:
    """``name`` unchanged, if it cannot widen a pattern: namespaces are DNS labels and bucket
    names have no wildcards, so anything else is a mistake that must not grant more."""
    if not name or name in (".", "..") or _UNSAFE.intersection(name):
        raise ValueError(f"{what} {name!r} cannot scope S3 access (empty, '.', or has * ? / \\)")
    return name
