"""The event loop Kadence's processes run on (uvloop where it is installed, asyncio's
otherwise), and their garbage collector's settings (:func:`tune_gc`).

uvloop (libuv under asyncio's API) makes the loop's own work — polling, socket writes, callbacks —
several times cheaper, and a worker or the operator spends a good part of each run there (see
docs/performance.md). It is a dependency of the package on CPython outside Windows;
``KADENCE_EVENT_LOOP`` chooses:

``auto`` (default)  uvloop if it can be imported, else asyncio's own loop
``uvloop``          uvloop, or an error naming the missing package
``asyncio``         asyncio's own loop (to rule uvloop out when debugging)
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

#: The environment variable that chooses the event loop.
EVENT_LOOP_ENV = "KADENCE_EVENT_LOOP"
CHOICES = ("auto", "uvloop", "asyncio")

T = TypeVar("T")


class EventLoopError(ValueError):
    """``KADENCE_EVENT_LOOP`` names a loop that cannot be used."""


def loop_factory(
    environ: dict[str, str] | None = None,
) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of the loop ``KADENCE_EVENT_LOOP`` asks for; ``None`` is asyncio's default."""
    raw = (os.environ if environ is None else environ).get(EVENT_LOOP_ENV, "auto")
    choice = raw.strip().lower() or "auto"
    if choice not in CHOICES:
        raise EventLoopError(f"{EVENT_LOOP_ENV} must be one of {', '.join(CHOICES)}, got {raw!r}")
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise EventLoopError(
                f"{EVENT_LOOP_ENV}=uvloop but uvloop is not installed (pip install uvloop)"
            ) from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


#: Allocations between two young-generation collections (CPython's default is 700).
GC_THRESHOLD = 10_000


def tune_gc() -> None:
    """Make the garbage collector's pauses rarer and shorter in a long-running process.

    Call it once start-up is over. The objects of start-up (modules, classes, clients: tens of
    thousands) never become garbage: frozen, no collection walks them again. A larger young
    generation lets more of the many short-lived objects of each run or fire die before they
    are promoted, so the older generations are collected far less often. In the operator, at a
    thousand fires a second, CPython's defaults made a full collection (0.4-0.6 s, blocking
    every fire) every few seconds; in a worker, collections were about 4 % of the
    instructions per run (docs/performance.md).
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, older, oldest)


def run(main: Coroutine[Any, Any, T]) -> T:
    """Like :func:`asyncio.run`, on the loop :func:`loop_factory` chooses."""
    try:
        factory = loop_factory()
    except EventLoopError:
        main.close()
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
