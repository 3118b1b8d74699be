"""Fetching a Queue's run requests: one pull loop per partition consumer, sized by free slots.

:class:`Fetcher` binds to the Queue's partition consumers (``partition-<n>``, and to new ones as
the Queue grows) and long-polls each with batched pull requests, asking only for as many
messages as the worker has free concurrency slots (:class:`~kadence.client.Slots`), so no
message waits in a worker that cannot run it. Each message delivered holds one slot, which the
worker gives back once the run is settled (:mod:`kadence.settling`). A loop whose consumer was
deleted ends; the others go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg

from kadence import constants
from kadence.client import KadenceClient
from kadence.consumer import Pull
from kadence.slots import Slots
from kadence.streams import partition_consumers

log = logging.getLogger("kadence.worker")


class Fetcher:
    """The pull loops of one worker on one Queue (see the module)."""

    def __init__(
        self,
        client: KadenceClient,
        *,
        stream: str,
        slots: Slots,
        deliver: Callable[[Msg], None],
        put_back: Callable[[Msg], None],
        stopping: asyncio.Event,
        fetch_timeout: float,
        max_batch: int,
        partition_refresh: float,
    ) -> None:
        self.client = client
        self.stream = stream
        self.slots = slots
        #: Called with each message fetched (it holds one slot), and with each message that came
        #: after its pull request was over (it holds none: put it back).
        self.deliver = deliver
        self.put_back = put_back
        self.stopping = stopping
        self.fetch_timeout = fetch_timeout
        self.max_batch = max_batch
        self.partition_refresh = partition_refresh
        #: Set once bound to the Queue's partitions and fetching.
        self.ready = asyncio.Event()
        self._loops: dict[int, asyncio.Task[None]] = {}
        #: The shortest redelivery deadline of each partition consumer (ack wait or backoff).
        self.ack_waits: dict[int, float] = {}

    @property
    def partitions(self) -> list[int]:
        return sorted(self._loops)

    async def run(self) -> None:
        """Bind to the Queue's partition consumers, and to new ones as the Queue grows, until
        ``stopping`` is set."""
        waited = 0.0
        js = self.client.js
        while not self.stopping.is_set():
            try:
                consumers = await js.consumers_info(self.stream)
                found = partition_consumers([c.name for c in consumers if c.name])
            except nats.js.errors.NotFoundError:
                found = []
            except (nats.errors.Error, TimeoutError) as error:
                log.warning("listing consumers of %s failed: %s", self.stream, error)
                found = []
            new = [p for p in found if p not in self._loops]
            for partition in new:
                self._loops[partition] = asyncio.create_task(self._fetch_loop(partition))
            if new:
                log.info("fetching from %s partition(s) %s", self.stream, new)
            if self._loops:
                self.ready.set()
                delay = self.partition_refresh
            else:
                if waited % 30 == 0:
                    log.info("waiting for stream %s and its partition consumers", self.stream)
                delay = 1.0
                waited += delay
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)

    async def aclose(self) -> None:
        """End the pull loops (call after closing the slots): the fetches in flight end within
        ``fetch_timeout``, and what they bring back is put back."""
        loops = list(self._loops.values())
        if not loops:
            return
        _, pending = await asyncio.wait(loops, timeout=self.fetch_timeout + 2)
        for loop in pending:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)

    async def _fetch_loop(self, partition: int) -> None:
        consumer = constants.consumer_name(partition)
        puller = Pull(
            self.client.nc,
            stream=self.stream,
            consumer=consumer,
            deliver=self.deliver,
            extra=self.put_back,
        )
        await puller.start()
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            # Heartbeats must beat the consumer's real deadline, which a backoff list shortens,
            # whatever the run request claims.
            config = (await self.client.js.consumer_info(self.stream, consumer)).config
            self.ack_waits[partition] = min([config.ack_wait or 30.0, *(config.backoff or [])])
        slots = self.slots
        try:
            while not self.stopping.is_set():
                wanted = await slots.take(self.max_batch)
                if wanted == 0:
                    break
                # With other partitions waiting for a slot, poll briefly and hand the slot on;
                # otherwise long-poll so an idle worker costs one request per fetch_timeout.
                timeout = min(1.0, self.fetch_timeout) if slots.waiting else self.fetch_timeout
                if puller.max_batch is not None and wanted > puller.max_batch:
                    slots.give(wanted - puller.max_batch)  # the consumer's own limit
                    wanted = puller.max_batch
                error: Exception | None = None
                try:
                    await puller.pull(wanted, expires=timeout)
                except (nats.errors.Error, ValueError) as failed:
                    error = failed
                finally:
                    # Each message delivered took its slot along; give back the rest.
                    slots.give(wanted - puller.got)
                if error is not None:
                    # Nobody answers a pull for a deleted consumer; check that this is why.
                    if (
                        isinstance(
                            error, nats.js.errors.NotFoundError | nats.errors.NoRespondersError
                        )
                        and (await self._consumer_exists(consumer)) is False
                    ):
                        log.warning(
                            "consumer %s of %s is gone; stopping its loop", consumer, self.stream
                        )
                        self._loops.pop(partition, None)
                        return
                    log.warning("fetching from %s/%s failed: %s", self.stream, consumer, error)
                    await asyncio.sleep(1.0)
                elif puller.conflict and not puller.got:
                    # The server refused the request (a leadership change, a limit of the
                    # consumer): do not ask again in a tight loop.
                    log.warning("pulling from %s/%s: %s", self.stream, consumer, puller.conflict)
                    await asyncio.sleep(1.0)
        finally:
            await puller.stop()

    async def _consumer_exists(self, consumer: str) -> bool | None:
        """Whether the partition consumer exists; None when JetStream cannot say now."""
        try:
            await self.client.js.consumer_info(self.stream, consumer)
        except nats.js.errors.NotFoundError:
            return False
        except (nats.errors.Error, TimeoutError):
            return None
        return True


__all__ = ["Fetcher"]
