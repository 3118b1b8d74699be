"""Benchmark (c): two operator replicas, one killed with SIGKILL.

Starts two replicas (default Lease settings: 15 s duration, 10 s renew, 2 s retry), creates
``--jobs`` Jobs (default 200) with ``interval: 1s`` and ``catchUp: One``, waits until the shards
are split and the Jobs run, then kills the replica holding the most shards (``kill -9``: no
clean-up, its Leases simply expire). ``bench.sink`` completes every run and records when
JetStream stored it. Measures:

* time from the kill until the survivor holds every shard Lease;
* time from the kill until every Job of the killed replica fired again (first run stored after
  the kill), the goal being at most the Lease duration + 2 s;
* slots: run ids seen twice (duplicates), slots between a Job's first and last run that neither
  ran nor were counted in ``status.counters.missed`` (lost), and the ones counted missed.

    .venv/bin/python -m bench.failover --jobs 200
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

from kubernetes import client

from bench.common import (
    REPO,
    create_jobs,
    create_queue,
    list_jobs,
    load,
    machine,
    metric,
    save,
    say,
    stack,
)
from kadence_devstack.procs import ManagedProcess
from kadence_operator.scheduling import shard_for

SHARDS = 32


def holders(api: client.ApiClient) -> dict[int, str | None]:
    leases = client.CoordinationV1Api(api).list_namespaced_lease(
        "kadence-system", label_selector="kadence.io/lease=shard"
    )
    found: dict[int, str | None] = {}
    for lease in leases.items:
        name = lease.metadata.name if lease.metadata else None
        if not name:
            continue
        shard = int(name.rsplit("-", 1)[1])
        found[shard] = lease.spec.holder_identity if lease.spec else None
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--warmup", type=float, default=20.0)
    parser.add_argument("--after", type=float, default=30.0, help="seconds to run after the kill")
    parser.add_argument("--lease-duration", default="15")
    parser.add_argument("--name", default="failover")
    args = parser.parse_args()

    result: dict[str, Any] = {"benchmark": "failover", "args": vars(args)}
    result["machine"] = machine()
    result["load_before"] = load()
    env = {"KADENCE_SHARDS": str(SHARDS), "KADENCE_LEASE_DURATION": args.lease_duration}
    with stack("failover") as st:
        ops = {name: st.start_operator(name, **env) for name in ("op-a", "op-b")}
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
            ],
            log_path=st.workdir / "sink.log",
            cwd=REPO,
        )
        st.helpers.append(sink)
        sink.launch()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            held = list(holders(st.api).values())
            if held.count("op-a") == held.count("op-b") == SHARDS // 2:
                break
            time.sleep(0.5)
        spec = {
            "queue": "q",
            "task": "bench.noop",
            "schedule": {"interval": "1s"},
            "catchUp": {"policy": "One"},
        }
        create_jobs(st, [f"fo-{i:04d}" for i in range(args.jobs)], spec)
        say(f"created {args.jobs} Jobs; warming up {args.warmup:.0f}s")
        time.sleep(args.warmup)

        before = holders(st.api)
        counts = {op: list(before.values()).count(op) for op in ops}
        victim = max(counts, key=lambda op: counts[op])
        survivor = next(op for op in ops if op != victim)
        uids = {j["metadata"]["name"]: j["metadata"]["uid"] for j in list_jobs(st)}
        victims_jobs = {n for n, uid in uids.items() if before[shard_for(uid, SHARDS)] == victim}
        say(f"killing {victim} ({counts[victim]} shards, {len(victims_jobs)} Jobs)")
        load_at_kill = load()
        killed_at = datetime.now(UTC)
        t0 = time.monotonic()
        ops[victim].kill()
        takeover = None
        while time.monotonic() - t0 < 60:
            if list(holders(st.api).values()).count(survivor) == SHARDS:
                takeover = time.monotonic() - t0
                break
            time.sleep(0.1)
        say(f"survivor holds every shard after {takeover}s")
        time.sleep(max(0.0, args.after - (time.monotonic() - t0)))
        time.sleep(6)  # one status interval (5 s) for counters.missed
        jobs = list_jobs(st)
        survivor_metrics = st.scrape(survivor)
        ops[survivor].stop()
        time.sleep(3)
        sink.stop(grace=30)

        rows = [line.split(",") for line in record.read_text().split() if line]
        runs = [(r[0], r[1], float(r[2]), float(r[3])) for r in rows]
        ids = [r[0] for r in runs]
        kill = killed_at.timestamp()
        refire: dict[str, float] = {}
        slots: dict[str, set[float]] = {}
        for _run_id, job, slot, stored in runs:
            slots.setdefault(job, set()).add(slot)
            if stored > kill and (job not in refire or stored < refire[job]):
                refire[job] = stored
        gaps = lost = missed_total = 0
        for body in jobs:
            name = body["metadata"]["name"]
            seen = sorted(slots.get(name, set()))
            if not seen:
                continue
            gap = round(seen[-1] - seen[0]) + 1 - len(seen)
            missed = ((body.get("status") or {}).get("counters") or {}).get("missed", 0)
            gaps += gap
            missed_total += missed
            lost += max(0, gap - missed)
        waits = [refire[n] - kill for n in victims_jobs if n in refire]
        result |= {
            "victim": victim,
            "victim_shards": counts[victim],
            "victim_jobs": len(victims_jobs),
            "load_at_kill": load_at_kill,
            "lease_takeover_seconds": round(takeover, 2) if takeover is not None else None,
            "every_victim_job_fired_again_after_seconds": round(max(waits), 2) if waits else None,
            "victim_jobs_that_fired_again": len(waits),
            "median_refire_seconds": round(sorted(waits)[len(waits) // 2], 2) if waits else None,
            "runs_seen": len(runs),
            "duplicate_run_ids_delivered": len(ids) - len(set(ids)),
            "duplicate_publishes_dropped_by_jetstream": metric(
                survivor_metrics, "kadence_operator_duplicate_publishes_total"
            ),
            "slots_not_run": gaps,
            "slots_counted_missed": missed_total,
            "slots_lost": lost,
        }
    result["load_after"] = load()
    save(args.name, result)
    print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
