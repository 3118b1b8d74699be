"""``kadence-operator``: run the operator (kopf) with settings from the environment."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from typing import Any, cast

import kopf

from kadence import loops
from kadence_operator import handlers
from kadence_operator.settings import OperatorSettings, SettingsError


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
        # kopf's liveness endpoint is served by aiohttp, which logs every kubelet probe (a line
        # every few seconds per replica, seen in the chart's pods); errors still show.
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    loops.tune_gc()
    # kopf.run() is kopf.operator() on the current loop; kopf picks uvloop by itself only in its
    # own CLI, so this entry point runs it on the loop kadence.loops chooses, as workers do.
    operator = kopf.operator(
        registry=registry,
        clusterwide=True,
        standalone=True,  # sharding is ours (shard Leases); kopf peering is not used
        # Without one kopf asks getpass for the user name, which raises where the uid has no
        # passwd entry (the chart's runAsUser: 65532). kopf types it as its own NewType of str,
        # peering.Identity, which it does not export.
        identity=cast(Any, settings.kopf_identity()),
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
