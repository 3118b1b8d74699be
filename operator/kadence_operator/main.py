"""``kadence-operator``: run the operator (kopf) with settings from the environment."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

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
    try:
        factory = loops.loop_factory()
    except loops.EventLoopError as error:
        print(f"kadence-operator: bad configuration: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    # kopf picks uvloop by itself only in its own CLI; this entry point chooses the same way.
    with asyncio.Runner(loop_factory=factory) as runner:
        kopf.run(
            loop=runner.get_loop(),
            registry=registry,
            clusterwide=True,
            standalone=True,  # sharding is ours (shard Leases); kopf peering is not used
            liveness_endpoint=args.liveness,
        )


if __name__ == "__main__":
    main()
