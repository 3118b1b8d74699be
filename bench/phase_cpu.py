"""CPU of the benchmark's processes by phase of the second: who has the cores when a burst is due.

Jobs with ``interval: 1s`` fire at the start of each second. This samples the CPU time of each
process of a running benchmark (every thread: ``/proc/<pid>/task/*/schedstat``, nanoseconds)
every few milliseconds and adds each sample's share to the bucket of the second it fell in
(``time.time() % 1``), so a run of ``--seconds`` gives the average cores each process used in
each ``--bucket-ms`` of the second. Run it in a second shell during a benchmark's window:

    .venv/bin/python -m bench.dispatch_lag --jobs 1000 --warmup 30 --window 60 --name x &
    sleep 55; .venv/bin/python -m bench.phase_cpu --seconds 40

Linux only. The sampler itself costs a few percent of one core; it is not counted.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from pathlib import Path

#: Column name -> the program: the base name of one of a process's first three arguments (the
#: binary; the script after ``python``; the module after ``python -m``).
PROCESSES = {
    "etcd": "etcd",
    "apiserver": "kube-apiserver",
    "nats": "nats-server",
    "operator": "kadence-operator",
    "sink": "bench.sink",
}


def find(programs: dict[str, str]) -> dict[str, int]:
    """The pid of the oldest running process of each program."""
    found: dict[str, int] = {}
    me = os.getpid()
    pids = sorted(int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit())
    for pid in pids:
        if pid == me:
            continue
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:3]
        except OSError:
            continue
        names = {os.path.basename(arg.decode(errors="replace")) for arg in argv}
        for column, program in programs.items():
            if column not in found and program in names:
                found[column] = pid
    return found


def cpu_ns(pid: int) -> int:
    """Nanoseconds on CPU of all threads of ``pid`` (threads that ended are not counted)."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(stat.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total


def sample(pids: dict[str, int], seconds: float, bucket_ms: int) -> dict[str, list[float]]:
    """Average cores per process per bucket of the second, over ``seconds``."""
    buckets = 1000 // bucket_ms
    used = {name: collections.Counter[int]() for name in pids}
    before = {name: cpu_ns(pid) for name, pid in pids.items()}
    last = time.time()
    end = last + seconds
    while time.time() < end:
        time.sleep(0.004)
        now = time.time()
        # The CPU used since the last sample is put in the bucket of the interval's middle; at
        # a few milliseconds per sample that blurs the profile by about one sample.
        bucket = int(((last + now) / 2 % 1.0) * 1000) // bucket_ms % buckets
        for name, pid in pids.items():
            current = cpu_ns(pid)
            used[name][bucket] += current - before[name]
            before[name] = current
        last = now
    width = seconds * bucket_ms / 1000  # seconds of wall time each bucket saw
    return {name: [used[name][b] / 1e9 / width for b in range(buckets)] for name in pids}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--bucket-ms", type=int, default=10, choices=[5, 10, 20, 25, 50, 100])
    args = parser.parse_args()
    pids = find(PROCESSES)
    if not pids:
        sys.exit("no benchmark process found (etcd, kube-apiserver, nats-server, operator, sink)")
    print("found " + ", ".join(f"{name} (pid {pid})" for name, pid in pids.items()), flush=True)
    cores = sample(pids, args.seconds, args.bucket_ms)
    names = list(pids)
    print("ms of the second | " + " | ".join(names) + "  (cores)")
    for b in range(1000 // args.bucket_ms):
        start = b * args.bucket_ms
        row = " | ".join(f"{cores[name][b]:.2f}" for name in names)
        print(f"{start:4d}-{start + args.bucket_ms:<4d} | {row}")
    print("mean             | " + " | ".join(f"{sum(cores[n]) / len(cores[n]):.2f}" for n in names))


if __name__ == "__main__":
    main()
