"""Verdicts and the table printed at the end of a run (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: The subject of a verdict about the whole run rather than one Job.
ALL = "*"


@dataclass(frozen=True)
class Verdict:
    """One invariant checked for one Job (or for the whole run, subject :data:`ALL`)."""

    invariant: str
    subject: str
    ok: bool
    expected: str
    observed: str
    note: str = ""


def failures(verdicts: Sequence[Verdict]) -> list[Verdict]:
    return [v for v in verdicts if not v.ok]


def summary(verdicts: Sequence[Verdict]) -> str:
    """One line per invariant: PASS, or FAIL with the Jobs that violate it."""
    order: list[str] = []
    by_invariant: dict[str, list[Verdict]] = {}
    for verdict in verdicts:
        if verdict.invariant not in by_invariant:
            order.append(verdict.invariant)
        by_invariant.setdefault(verdict.invariant, []).append(verdict)
    width = max((len(name) for name in order), default=10)
    lines = []
    for name in order:
        group = by_invariant[name]
        bad = [v.subject for v in group if not v.ok]
        state = "PASS" if not bad else "FAIL"
        where = f"  ({len(group)} checked)" if not bad else f"  violated by: {', '.join(bad)}"
        lines.append(f"{name.ljust(width)}  {state}{where}")
    lines.append(
        f"{len(order)} invariants, {len(verdicts)} checks, {len(failures(verdicts))} violations"
    )
    return "\n".join(lines)


def table(verdicts: Sequence[Verdict]) -> str:
    """Every check with its numbers, one row each."""
    header = ("invariant", "job", "expected", "observed", "verdict")
    rows = [
        (v.invariant, v.subject, v.expected, v.observed, "ok" if v.ok else "VIOLATED")
        for v in verdicts
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    notes = [f"  {v.invariant} / {v.subject}: {v.note}" for v in verdicts if v.note]
    if notes:
        lines.append("notes:")
        lines.extend(notes)
    return "\n".join(lines)
