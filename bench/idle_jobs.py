"""Benchmark (b): many idle Jobs on one operator replica — memory and idle CPU.

Creates ``--jobs`` Jobs (default 10,000) with ``interval: 1h`` (no slot falls in the run), waits
until the operator has taken every one in (``kadence_operator_jobs``) and its status writes have
settled, then measures over ``--window`` seconds (default 60): the operator's RSS (from /proc, and
before any Job existed), its CPU and the servers', and the status PATCHes sent.

    .venv/bin/python -m bench.idle_jobs --jobs 10000 --window 60
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from bench.common import (
    CpuMeter,
    create_jobs,
    create_queue,
    load,
    machine,
    metric,
    rss_mib,
    save,
    say,
    stack,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--settle", type=float, default=15.0, help="seconds without PATCHes")
    parser.add_argument("--name", default="idle_jobs")
    args = parser.parse_args()

    result: dict[str, Any] = {"benchmark": "idle_jobs", "args": vars(args)}
    result["machine"] = machine()
    result["load_before"] = load()
    with stack("idle") as st:
        op = st.start_operator("op-1")
        assert op.pid is not None
        create_queue(st, "q", partitions=4)
        time.sleep(3)
        result["operator_rss_mib_without_jobs"] = round(rss_mib(op.pid), 1)
        spec = {
            "queue": "q",
            "task": "bench.noop",
            "payload": {"report": "daily", "n": 1},
            "schedule": {"interval": "1h"},
        }
        names = [f"idle-{i:05d}" for i in range(args.jobs)]
        took = create_jobs(st, names, spec, threads=16)
        result["create_seconds"] = round(took, 1)
        say(f"created {args.jobs} Jobs in {took:.1f}s; waiting for the operator to settle")

        started = time.monotonic()
        last_patches, quiet_since = -1.0, time.monotonic()
        while time.monotonic() - started < 900:
            text = st.scrape("op-1")
            jobs = metric(text, "kadence_operator_jobs")
            patches = metric(text, "kadence_operator_status_patches_total", kind="jobs")
            if patches != last_patches:
                last_patches, quiet_since = patches, time.monotonic()
            if jobs >= args.jobs and time.monotonic() - quiet_since >= args.settle:
                break
            time.sleep(1)
        result["settle_seconds"] = round(time.monotonic() - started, 1)
        result["patches_to_settle"] = last_patches
        say(f"settled after {result['settle_seconds']}s; measuring {args.window:.0f}s")

        before = st.scrape("op-1")
        meter = CpuMeter({"operator": op.pid, **st.pids()})
        load_start = load()
        meter.start()
        rss: list[float] = []
        deadline = time.monotonic() + args.window
        while time.monotonic() < deadline:
            rss.append(rss_mib(op.pid))
            time.sleep(1)
        cpu = meter.stop()
        after = st.scrape("op-1")
        result |= {
            "load_during": {"start": load_start, "end": load()},
            "jobs_known": metric(after, "kadence_operator_jobs"),
            "operator_rss_mib": {"max": round(max(rss), 1), "last": round(rss[-1], 1)},
            "cpu_cores": cpu,
            "status_patches_in_window": metric(
                after, "kadence_operator_status_patches_total", kind="jobs"
            )
            - metric(before, "kadence_operator_status_patches_total", kind="jobs"),
            "runs_dispatched": metric(after, "kadence_operator_runs_dispatched_total"),
        }
    result["load_after"] = load()
    save(args.name, result)
    print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
