"""The ``clock-jump`` fault's mechanics: an operator replica's wall clock, moved at run time.

Each replica runs with libfaketime preloaded (the ``libfaketime`` package of the dev extras
ships a prebuilt ``libfaketime.so.1``) and reads its clock offset from a file of its own:

- ``FAKETIME_TIMESTAMP_FILE`` names the file; its first line is an offset in seconds, ``+0``,
  ``+45.0`` or ``-30.0``, relative to the real clock. ``FAKETIME`` must not be set: it would
  take precedence over the file.
- ``FAKETIME_NO_CACHE=1``: libfaketime reads the file on every wall-clock read (by default it
  caches it for 10 s), so a new offset takes effect at once, as an NTP step does.
- ``DONT_FAKE_MONOTONIC=1``: ``CLOCK_MONOTONIC`` (``time.monotonic()``, asyncio's timers) stays
  real; only ``CLOCK_REALTIME`` (``time.time()``, ``datetime.now()``, the log's timestamps) jumps.

The file is replaced atomically (:func:`write_offset`), so a replica never reads it half
written. A replica without a jump reads ``+0``: its clock is the real one.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

#: The library's file name inside the ``libfaketime`` package.
LIBRARY = "libfaketime.so.1"
#: Why the fault is skipped when the library is not there.
MISSING = (
    "libfaketime not found (pip install 'libfaketime>=2.1', part of the dev extras: "
    f"its package ships vendor/libfaketime/src/{LIBRARY})"
)


def find_library() -> Path | None:
    """The ``libfaketime.so.1`` of the installed ``libfaketime`` package, or None.

    The package is located without being imported (importing it needs pytz and dateutil).
    """
    try:
        spec = importlib.util.find_spec("libfaketime")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / "vendor" / "libfaketime" / "src" / LIBRARY
        if candidate.is_file():
            return candidate
    return None


def offset_text(seconds: float) -> str:
    """The offset as libfaketime reads it: ``+0``, ``+45.3``, ``-20.0`` (seconds)."""
    return "+0" if seconds == 0 else f"{seconds:+.1f}"


def write_offset(path: Path, seconds: float) -> None:
    """Set the clock offset read from ``path``: written aside, then renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(path.name + ".new")
    aside.write_text(offset_text(seconds) + "\n")
    os.replace(aside, path)


def faketime_env(library: Path, offset_file: Path) -> dict[str, str]:
    """The environment that preloads libfaketime with its offset read from ``offset_file``."""
    return {
        "LD_PRELOAD": str(library),
        "FAKETIME_TIMESTAMP_FILE": str(offset_file),
        "FAKETIME_NO_CACHE": "1",
        "DONT_FAKE_MONOTONIC": "1",
    }


class Clocks:
    """The operator replicas' clocks of one run: one offset file each under ``folder``.

    Not ``enabled`` (a run without ``clock-jump``) or without the library, :meth:`env` is
    empty and the replicas run without libfaketime.
    """

    def __init__(self, folder: Path, *, enabled: bool) -> None:
        self.folder = folder
        self.library = find_library() if enabled else None
        #: Why a jump cannot be made; empty when it can.
        self.unavailable = ""
        if not enabled:
            self.unavailable = (
                "the replicas were started without libfaketime (no clock-jump planned)"
            )
        elif self.library is None:
            self.unavailable = MISSING

    def offset_file(self, name: str) -> Path:
        return self.folder / f"{name}.faketime"

    def env(self, name: str) -> dict[str, str]:
        """The variables that give the process ``name`` its clock (a real one until a jump)."""
        if self.library is None:
            return {}
        path = self.offset_file(name)
        if not path.exists():
            write_offset(path, 0)
        return faketime_env(self.library, path)

    def jump(self, name: str, seconds: float) -> None:
        """Move ``name``'s wall clock ``seconds`` away from the real one (0: back to it)."""
        write_offset(self.offset_file(name), seconds)
