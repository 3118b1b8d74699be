"""The App the fault run's workers serve (``kadence worker --app <this file>:app``).

``faults.work`` works for a while, then writes one output object. The duration comes from the run
id (every attempt of a run takes as long), within the Job's ``[min_seconds, max_seconds]``. The
object's content names the run, the attempt, the worker and a fresh nonce, so two attempts never
write the same bytes: if one attempt's object replaced another's after it was reported, the
reported etag no longer matches the object's (the invariant "outputs not overwritten").
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid

from pydantic import BaseModel

import kadence

app = kadence.App("faults")
OUTPUT = "out.json"


class Work(BaseModel):
    min_seconds: float = 0.5
    max_seconds: float = 1.0


def duration(run_id: str, work: Work) -> float:
    """Seconds the run works: the same for every attempt of ``run_id``."""
    fraction = int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:4], "big") / 2**32
    return work.min_seconds + fraction * (work.max_seconds - work.min_seconds)


@app.task("faults.work")
async def work(params: Work, ctx: kadence.Context) -> None:
    await asyncio.sleep(duration(ctx.run_id, params))
    body = {
        "run": ctx.run_id,
        "attempt": ctx.attempt,
        "worker": ctx.worker,
        "nonce": uuid.uuid4().hex,
    }
    await ctx.output.aput(OUTPUT, json.dumps(body) + "\n", content_type="application/json")
