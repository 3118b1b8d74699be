"""Benchmark (a): many Jobs with a short interval on one operator replica.

Creates ``--jobs`` Jobs (default 1,000) with ``interval: 1s`` on one Queue, lets them run for
``--warmup`` seconds, then measures over ``--window`` seconds (default 60). ``bench.sink`` (a
separate process) completes every run at once, as very fast workers would, so that Job status
keeps its production size (``--sink-task-ms N``: each run N ms after the sink got it, as if its
task ran so long); ``--no-sink`` leaves every run active (status then grows by one run per slot,
and so does the cost of each status write).

* due → stored lag of every run whose slot falls in the window, from JetStream's own store
  timestamps (exact, every message; recorded by the sink, or read back from the stream with
  ``--no-sink``), and due → publish-acked lag from the operator's histogram
  (``kadence_operator_dispatch_lag_seconds``, bucketed);
* slots in the window that were never published (should be 0);
* the operator's CPU (cores) and RSS from /proc, the CPU of each server, and the whole
  machine's busy, stolen and idle cores;
* status PATCHes per second, from ``kadence_operator_status_patches_total``.

    .venv/bin/python -m bench.dispatch_lag --jobs 1000 --window 60
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import (
    REPO,
    CpuMeter,
    bucket_quantile,
    create_jobs,
    create_queue,
    delta_buckets,
    gc_pacer,
    histogram,
    load,
    machine,
    metric,
    now,
    percentiles,
    read_runs,
    rss_mib,
    save,
    say,
    share_within,
    stack,
)
from kadence_devstack.procs import ManagedProcess


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds")
    parser.add_argument("--warmup", type=float, default=30.0)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--status-interval", default="5", help="KADENCE_STATUS_INTERVAL")
    parser.add_argument("--spread", default="none", choices=["none", "hash"])
    parser.add_argument("--name", default="dispatch_lag")
    parser.add_argument("--no-sink", dest="sink", action="store_false")
    parser.add_argument(
        "--sink-mode",
        choices=["lean", "acked"],
        default="lean",
        help="bench.sink --mode: lean (default) or acked (a PubAck and a double ack per run)",
    )
    parser.add_argument(
        "--sink-task-ms",
        type=float,
        default=0.0,
        help="bench.sink --task-ms: each run reported this long after the sink got it (lean)",
    )
    args = parser.parse_args()

    result: dict[str, Any] = {"benchmark": "dispatch_lag", "args": vars(args)}
    result["machine"] = machine()
    result["load_before"] = load()
    with stack("lag") as st:
        op = st.start_operator("op-1", KADENCE_STATUS_INTERVAL=args.status_interval)
        assert op.pid is not None
        create_queue(st, "q", partitions=4)
        record = st.workdir / "sink.csv"
        sink = ManagedProcess(
            name="sink",
            argv=[
                sys.executable,
                "-m",
                "bench.sink",
                "--url",
                st.nats.url,
                "--record",
                str(record),
                "--mode",
                args.sink_mode,
                "--task-ms",
                str(args.sink_task_ms),
            ],
            log_path=st.workdir / "sink.log",
            cwd=REPO,
        )
        st.helpers.append(sink)
        if args.sink:
            sink.launch()
        names = [f"j{i:05d}" for i in range(args.jobs)]
        spec = {
            "queue": "q",
            "task": "bench.noop",
            "payload": {"n": 1},
            "schedule": {"interval": f"{args.interval:g}s", "spread": args.spread},
        }
        took = create_jobs(st, names, spec)
        result["create_seconds"] = round(took, 1)
        say(f"created {args.jobs} Jobs in {took:.1f}s; warming up {args.warmup:.0f}s")
        time.sleep(args.warmup)

        before = st.scrape("op-1")
        pids = {"operator": op.pid, **st.pids()}
        if sink.pid is not None:
            pids["sink"] = sink.pid
        meter = CpuMeter(pids)
        meter.start()
        load_start = load()
        t_start = now()
        rss: list[float] = []
        deadline = time.monotonic() + args.window
        while time.monotonic() < deadline:
            rss.append(rss_mib(op.pid))
            time.sleep(1)
        t_end = now()
        cpu = meter.stop()
        after = st.scrape("op-1")
        load_end = load()
        window = (t_end - t_start).total_seconds()
        op.stop()  # no more runs; read them at leisure
        if args.sink:
            time.sleep(3)
            sink.stop(grace=30)
            rows = [line.split(",") for line in record.read_text().split() if line]
            runs = [
                (r[0], r[1], datetime.fromtimestamp(float(r[2]), UTC), float(r[3])) for r in rows
            ]
        else:
            say("reading the stream")
            runs = [
                (
                    s.request.run_id,
                    s.request.job.name if s.request.job else "",
                    s.request.scheduled_at,
                    s.stored.timestamp(),
                )
                for s in read_runs(st, "q")
                if s.request.scheduled_at is not None
            ]
        in_window = [r for r in runs if t_start <= r[2] < t_end]
        lags = [r[3] - r[2].timestamp() for r in in_window]
        per_job: dict[str, set[Any]] = {}
        for r in in_window:
            per_job.setdefault(r[1], set()).add(r[2])
        ids = [r[0] for r in runs]
        expected = 0
        for name in names:
            slots = sorted(per_job.get(name, set()))
            if slots:
                # Slots of this Job inside the window: from its first to its last, every interval.
                span = (slots[-1] - slots[0]) / timedelta(seconds=args.interval)
                expected += round(span) + 1
        patches = metric(after, "kadence_operator_status_patches_total", kind="jobs") - metric(
            before, "kadence_operator_status_patches_total", kind="jobs"
        )
        conflicts = metric(after, "kadence_operator_status_conflicts_total", kind="jobs") - metric(
            before, "kadence_operator_status_conflicts_total", kind="jobs"
        )
        buckets = delta_buckets(
            histogram(after, "kadence_operator_dispatch_lag_seconds"),
            histogram(before, "kadence_operator_dispatch_lag_seconds"),
        )
        result |= {
            "window_seconds": round(window, 1),
            "load_during": {"start": load_start, "end": load_end},
            "runs_in_window": len(in_window),
            "jobs_seen_in_window": len(per_job),
            "slots_missing_in_window": expected - len(in_window),
            "run_ids_unique": len(ids) == len(set(ids)),
            "lag_due_to_stored": percentiles(lags),
            "lag_due_to_acked_histogram": {
                "count": buckets[-1][1] if buckets else 0,
                "p50": bucket_quantile(buckets, 0.5),
                "p90": bucket_quantile(buckets, 0.9),
                "p99": bucket_quantile(buckets, 0.99),
                "share_within_50ms": share_within(buckets, 0.05),
                "share_within_100ms": share_within(buckets, 0.1),
                "max_seen_ms": round(
                    metric(after, "kadence_operator_dispatch_lag_max_seconds") * 1000, 1
                ),
            },
            "gc_pacer": gc_pacer(after, before),
            "status_patches_per_second": round(patches / window, 1),
            "status_patch_budget_per_second": round(args.jobs / float(args.status_interval), 1),
            "status_conflicts": conflicts,
            "cpu_cores": cpu,
            "machine_cores": meter.machine,
            "operator_rss_mib": {"max": round(max(rss), 1), "last": round(rss[-1], 1)},
        }
    result["load_after"] = load()
    save(args.name, result)
    print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
