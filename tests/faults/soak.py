"""The fault suite as a long run: ``python -m tests.faults.soak --seed 1 --duration 600``.

``make soak SEED=1 DURATION=600`` runs it. It prints each fault as it is injected and the Jobs'
counters between faults, then the verdict table; it exits 1 when an invariant is violated or the
run could not complete, 0 otherwise. The processes' logs are kept under ``test-logs/`` (the path
is printed). ``--nats-cluster 3`` (``make soak NATS_CLUSTER=3``) runs against a 3-node NATS
cluster, with the ``nats-node-kill`` fault. See docs/reliability.md.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from tests.faults import faults, run

REPO = Path(__file__).resolve().parents[2]


def _say(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # As KeyboardInterrupt, so every process the run started is stopped on the way out.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.soak", description=__doc__)
    parser.add_argument("--seed", type=int, default=1, help="seed of the fault plan")
    parser.add_argument(
        "--duration", type=float, default=600.0, help="seconds of faults (every kind at least once)"
    )
    parser.add_argument(
        "--kinds",
        default=None,
        help="comma-separated fault kinds (default: all the NATS mode has; '' for a control run"
        " without faults)",
    )
    parser.add_argument(
        "--nats-cluster",
        type=int,
        choices=faults.NATS_CLUSTER_SIZES,
        default=1,
        help="NATS nodes: 1 (one nats-server) or 3 (a JetStream cluster, Queues with 3 replicas,"
        " and the nats-node-kill fault)",
    )
    parser.add_argument("--settle-timeout", type=float, default=180.0)
    parser.add_argument("--logs", type=Path, default=None, help="where to keep the logs")
    args = parser.parse_args(argv)
    kinds = None
    if args.kinds is not None:
        kinds = tuple(faults.FaultKind(k.strip()) for k in args.kinds.split(",") if k.strip())
    if args.nats_cluster == 1 and kinds and (needs := faults.CLUSTER_ONLY & set(kinds)):
        parser.error(f"{', '.join(sorted(needs))} needs --nats-cluster 3")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    cluster = f"-nats{args.nats_cluster}" if args.nats_cluster > 1 else ""
    logs = args.logs or REPO / "test-logs" / f"soak-seed{args.seed}{cluster}-{stamp}"
    signal.signal(signal.SIGTERM, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="kadence-soak-"))
    try:
        report = run.execute(
            run.RunConfig(
                seed=args.seed,
                duration=args.duration,
                workdir=workdir,
                kinds=kinds,
                settle_timeout=args.settle_timeout,
                logs_to=logs,
                always_keep_logs=True,
                nats_cluster=args.nats_cluster,
            ),
            _say,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(run.render(report), flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
