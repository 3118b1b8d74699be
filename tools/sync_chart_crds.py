"""Copy the generated CRDs (``crds/*.yaml``) into the Helm chart (``charts/kadence/crds/``).

The chart's CRDs must be byte-identical to the generated ones; ``tests/integration/test_chart.py``
asserts it. Run after ``make crds``::

    python tools/sync_chart_crds.py           # copy, and delete chart CRDs that no longer exist
    python tools/sync_chart_crds.py --check   # exit 1 and list the differences, change nothing
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "crds"
TARGET = REPO / "charts" / "kadence" / "crds"


def differences(source: Path = SOURCE, target: Path = TARGET) -> list[str]:
    """What differs between ``source`` and ``target`` (empty when they are in sync)."""
    wanted = {p.name: p.read_bytes() for p in sorted(source.glob("*.yaml"))}
    present = {p.name: p.read_bytes() for p in sorted(target.glob("*.yaml"))}
    problems = [f"missing in {target}: {name}" for name in wanted if name not in present]
    problems += [f"stale in {target}: {name}" for name in present if name not in wanted]
    problems += [
        f"differs: {target / name}"
        for name, data in wanted.items()
        if name in present and present[name] != data
    ]
    return problems


def sync(source: Path = SOURCE, target: Path = TARGET) -> list[str]:
    """Make ``target`` an exact copy of ``source``'s ``*.yaml``; returns what was changed."""
    if not any(source.glob("*.yaml")):
        raise SystemExit(f"no CRDs in {source}: generate them first (make crds)")
    changed = differences(source, target)
    target.mkdir(parents=True, exist_ok=True)
    for path in target.glob("*.yaml"):
        if not (source / path.name).is_file():
            path.unlink()
    for path in source.glob("*.yaml"):
        data = path.read_bytes()
        destination = target / path.name
        if not destination.is_file() or destination.read_bytes() != data:
            destination.write_bytes(data)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="only report differences; exit 1 if any"
    )
    args = parser.parse_args(argv)
    if args.check:
        problems = differences()
        if not any(SOURCE.glob("*.yaml")):
            problems.insert(0, f"no CRDs in {SOURCE}: generate them first (make crds)")
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("run: python tools/sync_chart_crds.py", file=sys.stderr)
        return 1 if problems else 0
    for change in sync():
        print(change)
    return 0


if __name__ == "__main__":
    sys.exit(main())
