"""``kadence-operator``: run the operator (kopf) with settings from the environment."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import sys

import kopf

from kadence import loops
from kadence_operator import handlers
from kadence_operator.settings import OperatorSettings, SettingsError

#: Allocations between two young-generation collections (CPython's default is 700).
GC_THRESHOLD = 10_000


def tune_gc() -> None:
    """Make the garbage collector's pauses rarer and shorter for a long-running operator.

    At a thousand runs a second the operator holds a few hundred thousand short-lived objects
    (runs awaiting their status write), and CPython's default thresholds made a full collection
    of all of them (0.4-0.6 s, blocking every fire) every few seconds. The objects of start-up
    (modules, classes, the Kubernetes client's models: ~80,000) never become garbage: frozen,
    no collection walks them again. A larger young generation lets more objects die before
    they are promoted, so the older generations are collected far less often.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, older, oldest)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="kadence-operator", description=__doc__)
    parser.add_argument("--liveness", default=None, help="e.g. http://0.0.0.0:8081/healthz")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    try:
        settings = OperatorSettings.from_env()
    except SettingsError as error:
        print(f"kadence-operator: bad configuration: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    registry = kopf.OperatorRegistry()
    handlers.register(registry, settings)
    kopf.configure(verbose=args.verbose)
    if not args.verbose:
        # kopf logs every handler call at INFO; with thousands of Jobs whose status changes every
        # few seconds that is hundreds of lines a second. Failures are still logged.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    tune_gc()
    # kopf.run() is kopf.operator() on the current loop; kopf picks uvloop by itself only in its
    # own CLI, so this entry point runs it on the loop kadence.loops chooses, as workers do.
    operator = kopf.operator(
        registry=registry,
        clusterwide=True,
        standalone=True,  # sharding is ours (shard Leases); kopf peering is not used
        liveness_endpoint=args.liveness,
    )
    try:
        with contextlib.suppress(asyncio.CancelledError):  # as kopf.run() does
            loops.run(operator)
    except loops.EventLoopError as error:
        print(f"kadence-operator: bad configuration: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
