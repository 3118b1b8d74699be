"""Example Kadence tasks, served by the demo's workers and the example Queue (``app: "app:app"``).

Run them locally against the dev stack::

    kadence ensure-queue reports --partitions 4
    kadence worker --queue reports --app examples/app.py:app --concurrency 4
    kadence enqueue reports.build '{"report": "sales", "day": "2025-01-31"}' -q reports --wait

Tasks:

- ``reports.build`` — builds a (synthetic) sales report for one day: writes ``report.csv`` (or
  ``report.json``) and returns a summary, stored as ``result.json``.
- ``reports.import`` — reads the run's input CSV object (``spec.input``) and summarises it.
- ``files.wordcount`` — streams the input object and counts lines, words and bytes.
- ``demo.echo`` — returns its payload.
- ``demo.sleep`` — works for a while (to watch heartbeats, Leases and overlap policies).
- ``demo.fail`` — always fails: retried per the Job's retryPolicy, then dead-lettered.
"""

from __future__ import annotations

import asyncio
import collections
import csv
import io
import json
import random
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field

import kadence

app = kadence.App("examples")


class ReportRequest(BaseModel):
    """What ``reports.build`` builds. Every field has a default, so ``{}`` is a valid payload."""

    report: str = Field("sales", max_length=64)
    #: The day to report on; ``period: previous-day`` (the default) means yesterday (UTC).
    day: date | None = None
    period: Literal["previous-day", "today"] = "previous-day"
    format: Literal["csv", "json"] = "csv"
    regions: list[str] = Field(default_factory=lambda: ["emea", "americas", "apac"], min_length=1)
    currency: str = "EUR"

    def report_day(self, now: datetime) -> date:
        if self.day is not None:
            return self.day
        today = now.astimezone(UTC).date()
        return today - timedelta(days=1) if self.period == "previous-day" else today


PRODUCTS = ("widgets", "gadgets", "gizmos", "doohickeys")


@app.task("reports.build")
async def build_report(params: ReportRequest, ctx: kadence.Context) -> dict[str, Any]:
    day = params.report_day(ctx.scheduled_at or datetime.now(UTC))
    # Deterministic figures per report and day: a retried or re-run slot produces the same file.
    rng = random.Random(f"{params.report}/{day.isoformat()}")
    rows: list[dict[str, Any]] = []
    for region in params.regions:
        for product in PRODUCTS:
            units = rng.randint(0, 500)
            rows.append(
                {
                    "day": day.isoformat(),
                    "region": region,
                    "product": product,
                    "units": units,
                    "revenue": round(units * rng.uniform(4.0, 40.0), 2),
                }
            )
        ctx.heartbeat()  # progress: one region done
        await asyncio.sleep(0)
    if params.format == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        written = await ctx.output.aput("report.csv", buffer.getvalue(), content_type="text/csv")
    else:
        written = await ctx.output.aput("report.json", json.dumps(rows, indent=2))
    total = round(sum(r["revenue"] for r in rows), 2)
    ctx.logger.info(
        "%s report for %s: %d rows, %.2f %s", params.report, day, len(rows), total, params.currency
    )
    return {
        "report": params.report,
        "day": day.isoformat(),
        "rows": len(rows),
        "revenue": total,
        "currency": params.currency,
        "file": written.uri,
    }


class ImportOptions(BaseModel):
    delimiter: str = Field(",", min_length=1, max_length=1)
    skip_header: bool = Field(True, alias="skipHeader")


@app.task("reports.import")
def import_csv(options: ImportOptions, ctx: kadence.Context) -> dict[str, Any]:
    with ctx.read_input() as stream:
        source = stream.uri
        text = stream.read().decode("utf-8-sig")
    reader = csv.reader(io.StringIO(text), delimiter=options.delimiter)
    header = next(reader, None) if options.skip_header else None
    rows = [row for row in reader if row]
    width = max((len(r) for r in rows), default=0)
    columns = header or [f"column{i + 1}" for i in range(width)]
    numeric = {}
    for index, name in enumerate(columns):
        values = [row[index] for row in rows if index < len(row)]
        try:
            numeric[name] = round(sum(float(v) for v in values), 6)
        except ValueError:
            continue  # not a numeric column
    summary = {
        "source": source,
        "rows": len(rows),
        "columns": columns,
        "sums": numeric,
    }
    ctx.output.put("summary.json", json.dumps(summary, indent=2))
    return summary


WORD = re.compile(rb"[A-Za-z0-9']+")


@app.task("files.wordcount")
def wordcount(ctx: kadence.Context) -> dict[str, Any]:
    counts: collections.Counter[bytes] = collections.Counter()
    lines = size = 0
    tail = b""
    with ctx.read_input() as stream:
        for chunk in stream:  # streamed: the object never has to fit in memory
            size += len(chunk)
            lines += chunk.count(b"\n")
            data = tail + chunk
            # A word may straddle two chunks: keep the unfinished end for the next one.
            cut = max(data.rfind(b" "), data.rfind(b"\n"))
            done, tail = (data[: cut + 1], data[cut + 1 :]) if cut >= 0 else (b"", data)
            counts.update(w.lower() for w in WORD.findall(done))
    counts.update(w.lower() for w in WORD.findall(tail))
    top = [{"word": w.decode(errors="replace"), "count": n} for w, n in counts.most_common(10)]
    ctx.output.put("top-words.json", json.dumps(top, indent=2))
    return {"lines": lines, "words": sum(counts.values()), "bytes": size}


@app.task("demo.echo")
def echo(payload: Any) -> Any:
    return payload


@app.task("demo.sleep")
async def sleep(seconds: float, ctx: kadence.Context) -> dict[str, Any]:
    """Work for ``seconds``; the worker heartbeats and renews the Job's Lease meanwhile."""
    started = datetime.now(UTC)
    await asyncio.sleep(seconds)
    return {
        "slept": seconds,
        "worker": ctx.worker,
        "fencing_token": ctx.fencing_token,
        "started": started.isoformat(),
    }


class FailRequest(BaseModel):
    message: str = "this task always fails"
    retryable: bool = True


@app.task("demo.fail")
def fail(request: FailRequest, ctx: kadence.Context) -> None:
    """Fails every time: retried while attempts remain (or never, with retryable: false)."""
    ctx.logger.warning("failing attempt %d of %d", ctx.attempt, ctx.max_attempts)
    if not request.retryable:
        raise kadence.Fail(request.message)
    raise RuntimeError(f"{request.message} (attempt {ctx.attempt})")
