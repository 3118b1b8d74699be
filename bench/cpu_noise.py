"""How steady the machine's CPU is: the same few milliseconds of work, timed again and again.

The dispatch benchmark's goal is about its worst 1 % of acks, and one burst of 1,000 runs is
1.7 % of a minute's runs: a burst whose few milliseconds of CPU work (writing the runs, reading
their acks) happen to run several times slower than usual is enough to miss it. This measures
how often that happens on the machine with nothing of Kadence involved: one thread runs a fixed
pure-Python workload (``--work-ms`` on this machine, calibrated at the start), sleeps
``--gap-ms``, and again, for ``--seconds``; it prints the wall and thread-CPU time of the units
(percentiles) and the share of units that took more than twice the median. It also prints the
machine's busy and stolen cores over the run (``/proc/stat``). Run it with nothing else on the
machine, before and after a series:

    .venv/bin/python -m bench.cpu_noise --seconds 60

When the thread-CPU time of a slow unit is as long as its wall time, the guest was not
descheduling the thread: the same instructions ran slower (the hypervisor, another tenant on the
same core, memory bandwidth), which the guest's steal counter does not necessarily show.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from bench.common import CpuMeter, machine, percentiles, save


def _unit(rounds: int) -> int:
    total = 0
    for i in range(rounds):
        total += i * i % 7
    return total


def calibrate(work_ms: float) -> int:
    """The rounds of :func:`_unit` that take ``work_ms`` of CPU here (the fastest of five)."""
    rounds = 10_000
    best = min(_timed(rounds) for _ in range(5))
    return max(1, round(rounds * work_ms / 1000 / best))


def _timed(rounds: int) -> float:
    started = time.thread_time()
    _unit(rounds)
    return time.thread_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--work-ms", type=float, default=5.0, help="CPU work per unit")
    parser.add_argument("--gap-ms", type=float, default=50.0, help="sleep between units")
    parser.add_argument("--name", default="cpu_noise")
    args = parser.parse_args()
    rounds = calibrate(args.work_ms)
    meter = CpuMeter({})
    meter.start()
    walls: list[float] = []
    cpus: list[float] = []
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        wall, cpu = time.perf_counter(), time.thread_time()
        _unit(rounds)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.thread_time() - cpu)
        time.sleep(args.gap_ms / 1000)
    meter.stop()
    median = sorted(walls)[len(walls) // 2]
    result: dict[str, Any] = {
        "benchmark": "cpu_noise",
        "args": vars(args),
        "machine": machine(),
        "units": len(walls),
        "wall": percentiles(walls),
        "thread_cpu": percentiles(cpus),
        "share_over_2x_median": round(sum(w > 2 * median for w in walls) / len(walls), 4),
        "share_over_4x_median": round(sum(w > 4 * median for w in walls) / len(walls), 4),
        "machine_cores": meter.machine,
    }
    save(args.name, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
