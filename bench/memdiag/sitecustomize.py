"""Where a running operator's memory is: loaded first, it dumps a report on ``SIGUSR2``.

Put this folder first on the operator's ``PYTHONPATH`` (the benchmarks take it from
``KADENCE_BENCH_OPERATOR_PYTHONPATH``), then signal the settled operator::

    KADENCE_BENCH_OPERATOR_PYTHONPATH=bench/memdiag:worker:operator \\
        .venv/bin/python -m bench.idle_jobs --jobs 10000 --window 60 --name memdiag &
    # once it says "settled":
    kill -USR2 "$(pgrep -f bin/kadence-operator)"

The report goes to ``$KADENCE_MEMDIAG_DIR`` (default ``/tmp``) as ``memdiag.<pid>.txt``:
the resident memory by kind of mapping (``/proc/<pid>/smaps``), CPython's allocator statistics
(``sys._debugmallocstats``: arenas, bytes in used and free blocks) and the size of the objects
reachable from each long-lived part of the operator (the scheduler, the status writer, the
``KnownJob`` records, kopf's per-object memories), each object charged to the first part that
reaches it. Diagnostic only: the report unfreezes and collects the garbage collector's
generations and walks every object, which takes a few seconds and tens of MiB while it runs.
"""

from __future__ import annotations

import collections
import gc
import os
import re
import signal
import sys
import types
from collections.abc import Iterable
from typing import Any, TextIO

_SHARED = (
    type,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.CodeType,
    types.MethodType,
    types.FrameType,
)


def _smaps(out: TextIO) -> None:
    rss: collections.Counter[str] = collections.Counter()
    current = ""
    with open(f"/proc/{os.getpid()}/smaps") as smaps:
        for line in smaps:
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                parts = line.split()
                path = parts[5] if len(parts) > 5 else ""
                if not path:
                    current = "anonymous (CPython arenas, thread stacks, mmap'd blocks)"
                elif path.startswith("["):
                    current = path  # [heap]: glibc's main arena; [stack]
                else:
                    current = "files (the interpreter, libraries, extension modules)"
            elif line.startswith("Rss:"):
                rss[current] += int(line.split()[1])
    out.write("# resident memory by mapping\n")
    for kind, kib in rss.most_common():
        out.write(f"{kib / 1024:9.1f} MiB  {kind}\n")
    out.write(f"{sum(rss.values()) / 1024:9.1f} MiB  in all\n\n")


def _walk(root: Any, seen: set[int], sizes: collections.Counter[str]) -> tuple[int, int]:
    total = count = 0
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, _SHARED):
            continue
        seen.add(id(obj))
        size = sys.getsizeof(obj)
        total += size
        count += 1
        sizes[type(obj).__qualname__] += size
        stack.extend(gc.get_referents(obj))
    return total, count


def _parts(objects: Iterable[Any]) -> list[tuple[str, Any]]:
    runtime = memories = None
    for obj in objects:
        name = type(obj).__name__
        if name == "Runtime" and type(obj).__module__ == "kadence_operator.runtime":
            runtime = obj
        elif name == "ResourceMemories" and (
            memories is None or len(obj._items) > len(memories._items)
        ):
            memories = obj
    parts: list[tuple[str, Any]] = []
    if runtime is not None:
        parts += [
            ("scheduler: entries", runtime.scheduler._entries),
            ("scheduler: due-time heap", runtime.scheduler._heap),
            ("status writer: cached statuses", runtime.job_writer._cache),
            ("status writer: last writes", runtime.job_writer._last_flush),
            ("KnownJob records", runtime.jobs),
        ]
    if memories is not None:
        parts.append(("kopf: per-object memories", memories._items))
    return parts


def report(out: TextIO) -> None:
    _smaps(out)
    out.flush()
    saved = os.dup(2)
    os.dup2(out.fileno(), 2)  # _debugmallocstats writes to the C stderr
    try:
        sys._debugmallocstats()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    gc.unfreeze()  # frozen objects are not listed by gc.get_objects()
    gc.collect()
    objects = gc.get_objects()
    seen: set[int] = {id(module) for module in list(sys.modules.values())}
    out.write("\n# objects reachable from each part (sys.getsizeof, first part to reach wins)\n")
    for name, root in [*_parts(objects), ("everything else", objects)]:
        sizes: collections.Counter[str] = collections.Counter()
        total, count = _walk(root, seen, sizes)
        top = ", ".join(f"{kind} {size / 1e6:.2f}" for kind, size in sizes.most_common(6))
        out.write(f"{total / 1e6:8.2f} MB {count:9d} objects  {name}  [{top}]\n")


def _on_signal(signum: int, frame: types.FrameType | None) -> None:
    folder = os.environ.get("KADENCE_MEMDIAG_DIR", "/tmp")
    with open(os.path.join(folder, f"memdiag.{os.getpid()}.txt"), "w") as out:
        report(out)


signal.signal(signal.SIGUSR2, _on_signal)
