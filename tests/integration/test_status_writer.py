"""The status writer against a real API server: a write held for a burst of fires waits, then
goes ahead (the burst logic itself is tabled in ``tests/unit/test_scheduling_bursts.py``)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from kubernetes import client, config

from kadence_devstack.kube import KubeControlPlane
from kadence_operator.statuswriter import ObjectGone, StatusWriter

pytestmark = pytest.mark.integration


async def test_a_held_write_waits_for_the_hold_then_goes_ahead(kube: KubeControlPlane) -> None:
    new_client: Any = config.new_client_from_config
    api: client.ApiClient = new_client(config_file=str(kube.kubeconfig))
    writer = StatusWriter(
        api=api, group="kadence.io", version="v1alpha1", plural="jobs", interval=0
    )
    holds = [0.5]  # the first write is held half a second, later ones not at all
    asked: list[float] = []

    def hold() -> float:
        asked.append(time.monotonic())
        return holds.pop() if holds else 0.0

    writer.hold = hold
    stop = asyncio.Event()
    running = asyncio.create_task(writer.run(stop))
    try:
        started = time.monotonic()
        # A Job that does not exist: the write's GET answers 404 once the hold is over.
        gone = writer.submit("default", f"missing-{uuid.uuid4().hex[:6]}", lambda s: s)
        with pytest.raises(ObjectGone):
            await asyncio.wait_for(gone, 10)
        assert time.monotonic() - started >= 0.5
        again = writer.submit("default", f"missing-{uuid.uuid4().hex[:6]}", lambda s: s)
        with pytest.raises(ObjectGone):
            await asyncio.wait_for(again, 10)
        assert len(asked) == 2  # asked once before each write
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)
        await writer.close()
