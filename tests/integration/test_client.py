"""KadenceClient and the stream set-up functions against a real nats-server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, RetentionPolicy, StreamConfig

from kadence import constants
from kadence._nats import DirectNATS
from kadence.client import KadenceClient
from kadence.partitioning import partition_for
from kadence.protocol import (
    MAX_PAYLOAD_BYTES,
    DecodeError,
    JobRef,
    RunError,
    RunResult,
    RunState,
    decode_run,
)
from kadence.requests import Requests, pub_ack, replied_at
from kadence.slots import Slots
from kadence.streams import (
    ensure_dlq_stream,
    ensure_queue_stream,
    ensure_results_stream,
    queue_partitions,
)
from kadence_devstack.nats import NatsServer
from tests.conftest import track
from tests.integration.test_worker_support import connected, fresh_queue, unique

pytestmark = pytest.mark.integration


async def test_ensure_queue_stream_creates_then_updates(nats_server: NatsServer) -> None:
    async with connected(nats_server, namespace="team-a") as client:
        queue = unique("q")
        try:
            for _ in range(2):  # idempotent
                await ensure_queue_stream(
                    client.js,
                    namespace="team-a",
                    queue=queue,
                    partitions=2,
                    ack_wait=30,
                    max_deliver=5,
                )
            info = await ensure_queue_stream(
                client.js,
                namespace="team-a",
                queue=queue,
                partitions=3,
                ack_wait=12,
                max_deliver=7,
                backoff=[1, 5],
                max_ack_pending=50,
                duplicate_window=60,
            )
            config = info.config
            assert config.name == f"KADENCE_team-a_{queue}"
            assert config.subjects == [f"kadence.team-a.{queue}.*"]
            assert config.retention == RetentionPolicy.WORK_QUEUE
            assert config.duplicate_window == 60
            assert (config.metadata or {})[constants.PARTITIONS_METADATA_KEY] == "3"
            consumers = {c.name: c.config for c in await client.js.consumers_info(config.name)}
            assert sorted(consumers) == ["partition-0", "partition-1", "partition-2"]
            for p in range(3):
                consumer = consumers[f"partition-{p}"]
                assert consumer.durable_name == f"partition-{p}"
                assert consumer.filter_subject == f"kadence.team-a.{queue}.{p}"
                assert consumer.ack_policy == AckPolicy.EXPLICIT
                assert consumer.max_deliver == 7
                assert consumer.max_ack_pending == 50
                assert consumer.backoff == [1, 5]
            assert await queue_partitions(client.js, namespace="team-a", queue=queue) == [0, 1, 2]
            assert (await client.queue_info(queue)).partition_count == 3
        finally:
            await client.js.delete_stream(constants.stream_name("team-a", queue))


async def test_backoff_must_be_shorter_than_max_deliver(nats_server: NatsServer) -> None:
    async with connected(nats_server) as client:
        with pytest.raises(ValueError, match="fewer entries than max_deliver"):
            await ensure_queue_stream(
                client.js, namespace="default", queue="never", max_deliver=2, backoff=[1, 2]
            )
        with pytest.raises(ValueError, match="partitions"):
            await ensure_queue_stream(client.js, namespace="default", queue="never", partitions=0)


async def test_dlq_and_results_streams(nats_server: NatsServer) -> None:
    async with connected(nats_server) as client:
        queue = unique("q")
        try:
            for _ in range(2):
                dlq = await ensure_dlq_stream(
                    client.js, namespace="default", queue=queue, max_age=3600
                )
                results = await ensure_results_stream(client.js)
            assert dlq.config.subjects == [f"kadence-dlq.default.{queue}"]
            assert dlq.config.retention == RetentionPolicy.LIMITS
            assert dlq.config.max_age == 3600
            assert results.config.name == constants.RESULTS_STREAM
            assert results.config.subjects == ["kadence-results.>"]
            assert results.config.retention == RetentionPolicy.LIMITS
            assert results.config.duplicate_window == 120
        finally:
            await client.js.delete_stream(constants.dlq_stream_name("default", queue))


async def test_partitions_from_consumers_when_metadata_is_missing(nats_server: NatsServer) -> None:
    async with connected(nats_server) as client:
        queue = unique("q")
        stream = constants.stream_name("default", queue)
        await client.js.add_stream(
            StreamConfig(
                name=stream,
                subjects=[constants.subjects_wildcard("default", queue)],
                retention=RetentionPolicy.WORK_QUEUE,
            )
        )
        try:
            assert await queue_partitions(client.js, namespace="default", queue=queue) == [0]
            for p in (0, 1, 3):
                await client.js.add_consumer(
                    stream,
                    durable_name=f"partition-{p}",
                    name=f"partition-{p}",
                    filter_subject=constants.subject("default", queue, p),
                )
            # Not a partition consumer: ignored.
            await client.js.add_consumer(
                stream,
                durable_name="audit",
                name="audit",
                filter_subject=constants.subject("default", queue, 2),
            )
            assert await queue_partitions(client.js, namespace="default", queue=queue) == [0, 1, 3]
        finally:
            await client.js.delete_stream(stream)


async def test_publish_routes_by_key_and_deduplicates(nats_server: NatsServer) -> None:
    async with connected(nats_server) as client, fresh_queue(client, partitions=4) as queue:
        keys = [f"customer-{i}" for i in range(20)]
        for key in keys:
            ack = await client.publish(queue.name, key.encode(), key=key)
            assert ack.stream == queue.stream
        first = await client.publish(queue.name, b"once", msg_id="m-1")
        again = await client.publish(queue.name, b"once", msg_id="m-1")
        assert not first.duplicate
        assert again.duplicate
        explicit = await client.publish(queue.name, b"p2", partition=2, partitions=4)
        assert not explicit.duplicate
        seen: dict[str, int | None] = {}
        stream = client.consume(queue.name, batch=8, fetch_timeout=1)
        try:
            while len(seen) < len(keys) + 2:
                message = await asyncio.wait_for(anext(stream), 10)
                seen[message.data.decode()] = message.partition
                await message.ack_sync()
        finally:
            await stream.aclose()
        for key in keys:
            assert seen[key] == partition_for(key, 4)
        assert seen["once"] == partition_for("m-1", 4)  # no key: routed by msg id
        assert seen["p2"] == 2
        assert (await client.js.stream_info(queue.stream)).state.messages == 0


async def test_consume_nak_term_and_in_progress(nats_server: NatsServer) -> None:
    async with connected(nats_server) as client, fresh_queue(client, ack_wait=2) as queue:
        for body in (b"nak-me", b"term-me", b"slow"):
            await client.publish(queue.name, body, partition=0)
        stream = client.consume(queue.name, batch=3, fetch_timeout=1)
        try:
            got = {}
            for _ in range(3):
                message = await asyncio.wait_for(anext(stream), 10)
                got[message.data] = message
            assert all(m.num_delivered == 1 for m in got.values())
            naked = time.monotonic()
            await got[b"nak-me"].nak(delay=0.5)
            await got[b"term-me"].term()
            # Keep "slow" well past its ack wait (2 s) with in-progress acks: only the nak'ed
            # message comes back meanwhile, after its delay.
            back = []
            while time.monotonic() - naked < 3.5:
                await got[b"slow"].in_progress()
                try:
                    message = await asyncio.wait_for(anext(stream), 0.5)
                except TimeoutError:
                    continue
                back.append((message, time.monotonic() - naked))
                await message.ack_sync()
            assert [(m.data, m.num_delivered) for m, _ in back] == [(b"nak-me", 2)]
            assert back[0][1] >= 0.5
            await got[b"slow"].ack_sync()
        finally:
            await stream.aclose()
        assert (await client.js.stream_info(queue.stream)).state.messages == 0


async def test_closing_consume_puts_unread_messages_back(nats_server: NatsServer) -> None:
    async with connected(nats_server) as client, fresh_queue(client, ack_wait=30) as queue:
        for i in range(5):
            await client.publish(queue.name, f"m{i}".encode(), partition=0)
        stream = client.consume(queue.name, batch=5, fetch_timeout=1)
        first = await asyncio.wait_for(anext(stream), 10)
        await first.ack_sync()
        await stream.aclose()  # the other four were fetched into the buffer, never yielded
        again = client.consume(queue.name, batch=5, fetch_timeout=1)
        try:
            rest = [await asyncio.wait_for(anext(again), 5) for _ in range(4)]  # not 30 s later
        finally:
            await again.aclose()
        assert sorted(m.data for m in rest) == [b"m1", b"m2", b"m3", b"m4"]


async def test_enqueue_builds_a_run_request(nats_server: NatsServer) -> None:
    async with (
        connected(nats_server, namespace="default") as client,
        fresh_queue(client, ack_wait=17) as queue,
    ):
        request = await client.enqueue(
            "reports.build", {"day": "2024-05-01"}, queue=queue.name, run_id="adhoc-1", key="k"
        )
        duplicate = await client.enqueue("reports.build", {}, queue=queue.name, run_id="adhoc-1")
        assert duplicate.run_id == request.run_id
        assert (await client.js.stream_info(queue.stream)).state.messages == 1
        stream = client.consume(queue.name)
        try:
            message = await asyncio.wait_for(anext(stream), 10)
            await message.ack_sync()
        finally:
            await stream.aclose()
        decoded = decode_run(message.data)
        assert decoded == request
        assert message.headers[constants.MSG_ID_HEADER] == "adhoc-1"
        assert decoded.job is None
        assert decoded.ack_wait_seconds == 17
        assert decoded.dlq_subject == constants.dlq_subject("default", queue.name)
        assert decoded.partition_key == "k"
        with pytest.raises(DecodeError, match="payload"):
            await client.enqueue("t", "x" * MAX_PAYLOAD_BYTES, queue=queue.name)
        assert (await client.js.stream_info(queue.stream)).state.messages == 0


async def test_results_publish_dedupe_and_wait(nats_server: NatsServer) -> None:
    async with connected(nats_server, namespace=unique("ns-")) as client:
        await ensure_results_stream(client.js)
        run_id = unique("run-")
        running = RunResult(run_id=run_id, attempt=1, state=RunState.RUNNING, worker="w")
        assert not (await client.publish_result(running)).duplicate
        assert (await client.publish_result(running)).duplicate  # same run, attempt and state

        async def finish_later() -> None:
            await asyncio.sleep(0.5)
            await client.publish_result(
                RunResult(
                    run_id=run_id,
                    attempt=1,
                    state=RunState.RETRYING,
                    error=RunError(type="E", message="m", retryable=True),
                )
            )
            await client.publish_result(
                RunResult(run_id=run_id, attempt=2, state=RunState.SUCCEEDED)
            )

        task = asyncio.create_task(finish_later())
        result = await client.wait_result(run_id, wait=10)
        await task
        assert (result.attempt, result.state) == (2, RunState.SUCCEEDED)
        stored = await client.results()
        assert [(r.attempt, r.state) for r in stored] == [
            (1, RunState.RUNNING),
            (1, RunState.RETRYING),
            (2, RunState.SUCCEEDED),
        ]
        with pytest.raises(TimeoutError):
            await client.wait_result("never", wait=0.5)


async def test_announced_results_are_stored_in_order_and_deduplicated(
    nats_server: NatsServer,
) -> None:
    """The Running report goes out without an ack wait, yet lands in the stream like any other."""
    async with connected(nats_server, namespace=unique("ns-")) as client:
        await ensure_results_stream(client.js)
        run_id = unique("run-")
        running = RunResult(run_id=run_id, attempt=1, state=RunState.RUNNING, worker="w")
        await client.announce_result(running)
        await client.announce_result(running)  # the same report again: JetStream drops it
        await client.publish_result(RunResult(run_id=run_id, attempt=1, state=RunState.SUCCEEDED))
        stored = [r for r in await client.results() if r.run_id == run_id]
        assert [(r.attempt, r.state, r.worker) for r in stored] == [
            (1, RunState.RUNNING, "w"),
            (1, RunState.SUCCEEDED, ""),
        ]


async def test_a_result_batch_is_one_message_read_back_as_its_results(
    nats_server: NatsServer,
) -> None:
    """Several results of one subject in one message: stored once, de-duplicated as a whole,
    and read back by ``results()`` one by one, in order; a wrong mix is refused."""
    async with connected(nats_server, namespace=unique("ns-")) as client:
        await ensure_results_stream(client.js)
        results = [
            RunResult(run_id=unique("run-"), attempt=1, state=RunState.SUCCEEDED, worker="w")
            for _ in range(3)
        ]
        before = (await client.js.stream_info(constants.RESULTS_STREAM)).state.messages
        ack = await client.publish_results(results)
        assert not ack.duplicate
        assert (await client.publish_results(results)).duplicate  # the same batch again
        assert not (await client.publish_results(results[:2])).duplicate  # another batch
        info = await client.js.stream_info(constants.RESULTS_STREAM)
        assert info.state.messages == before + 2
        stored = await client.js.get_msg(constants.RESULTS_STREAM, ack.seq)
        assert stored.headers is not None
        assert stored.headers[constants.MSG_ID_HEADER].startswith("batch:")
        read = [r for r in await client.results() if r.run_id in {x.run_id for x in results}]
        assert read == [*results, *results[:2]]
        other = RunResult(
            run_id="x",
            attempt=1,
            state=RunState.SUCCEEDED,
            job=JobRef(namespace="default", name="elsewhere", uid="u"),
        )
        with pytest.raises(ValueError, match="one subject"):
            await client.publish_results([results[0], other])


async def test_connect_uses_settings(nats_server: NatsServer) -> None:
    from kadence.config import Settings

    settings = Settings(nats_urls=tuple(nats_server.urls), namespace="elsewhere")
    async with await KadenceClient.connect(settings) as client:
        assert client.namespace == "elsewhere"
        assert client.nc.is_connected
    assert client.nc.is_closed


async def test_slots_hand_out_permits_fairly() -> None:
    slots = Slots(3)
    assert await slots.take(2) == 2
    assert await slots.take(5) == 1  # only one left
    order: list[str] = []

    async def waiter(name: str, most: int) -> int:
        got = await slots.take(most)
        order.append(name)
        return got

    a = asyncio.create_task(waiter("a", 4))
    b = asyncio.create_task(waiter("b", 1))
    await asyncio.sleep(0)
    assert slots.waiting == 2
    slots.give(1)  # the longest waiter gets it, even if the releaser would take again
    assert await a == 1
    slots.give(2)
    assert await b == 1
    assert order == ["a", "b"]
    assert slots.free == 1
    assert await slots.take(3) == 1
    c = asyncio.create_task(slots.take())
    await asyncio.sleep(0)
    slots.close()
    assert await c == 0
    assert await slots.take() == 0


async def test_requests_report_what_nats_py_reports(nats_server: NatsServer) -> None:
    """The hot-path requester: acks, duplicates, wrong stream, no stream, no reply, concurrency."""
    import nats.errors
    import nats.js.errors

    async with connected(nats_server) as client, fresh_queue(client) as queue:
        requests = client.requests
        subject = constants.subject(client.namespace, queue.name, 0)
        acks = await asyncio.gather(
            *(
                requests.publish(subject, b"x", headers={constants.MSG_ID_HEADER: f"r-{i % 50}"})
                for i in range(200)
            )
        )
        assert {a.stream for a in acks} == {queue.stream}
        assert sum(1 for a in acks if not a.duplicate) == 50  # one store per id
        assert len({a.seq for a in acks if not a.duplicate}) == 50
        with pytest.raises(nats.js.errors.BadRequestError, match="expected stream"):
            await requests.publish(subject, b"x", stream="NOT_THIS_ONE")
        with pytest.raises(nats.js.errors.NoStreamResponseError):
            await requests.publish(f"kadence-nowhere.{unique('s')}", b"x")
        silent = await client.nc.subscribe(f"silent.{unique('s')}")  # answers nothing
        started = time.monotonic()
        with pytest.raises(nats.errors.TimeoutError):
            await requests.request(silent.subject, b"?", timeout=0.3)
        assert 0.25 < time.monotonic() - started < 2.0
        await silent.unsubscribe()
        assert not requests._waiting  # nothing left behind by the errors

        stream = client.consume(queue.name, batch=4, fetch_timeout=1)
        try:
            message = await asyncio.wait_for(anext(stream), 10)
            await message.ack_sync()
            assert message.msg.is_acked
            with pytest.raises(nats.errors.MsgAlreadyAckdError):
                await message.ack_sync()
        finally:
            await stream.aclose()
        info = await client.js.consumer_info(queue.stream, constants.consumer_name(0))
        assert info.ack_floor.stream_seq >= 1


async def test_prepared_requests_are_what_publish_sends(nats_server: NatsServer) -> None:
    """Requests.prepare + write (the scheduler's staged bursts): the stream stores the same
    message nats-py's publish would, deduplicates it, and acks each one; a discarded request
    sends nothing and leaves no waiter; a closed connection fails the write."""
    import nats
    import nats.errors

    async with connected(nats_server) as client, fresh_queue(client) as queue:
        requests = client.requests
        subject = constants.subject(client.namespace, queue.name, 0)
        await requests.ready()
        with pytest.raises(nats.errors.BadSubjectError):
            requests.prepare("bad subject", b"x")
        headers = {constants.MSG_ID_HEADER: "p-0", "X-Note": " two\r\nlines "}
        prepared = [
            requests.prepare(
                subject, b'{"n": %d}' % i, headers={**headers, "Nats-Msg-Id": f"p-{i}"}
            )
            for i in range(20)
        ]
        dropped = requests.prepare(subject, b"never", headers={"Nats-Msg-Id": "dropped"})
        requests.discard(dropped)
        assert dropped.reply.cancelled()
        again = requests.prepare(subject, b"again", headers={"Nats-Msg-Id": "p-3"})
        assert replied_at(again.reply) is None
        written = time.monotonic()
        await requests.write([*prepared, again])
        acks = [pub_ack(await asyncio.wait_for(p.reply, 10)) for p in [*prepared, again]]
        # Each reply knows when the read loop took it (the scheduler times acks by it).
        read = [replied_at(p.reply) for p in [*prepared, again]]
        assert all(r is not None and written <= r <= time.monotonic() for r in read)
        assert read == sorted(read)  # type: ignore[type-var]
        assert [a.duplicate for a in acks] == [None] * 20 + [True]
        assert [a.seq for a in acks[:20]] == list(range(acks[0].seq, acks[0].seq + 20))
        stored = await client.js.get_msg(queue.stream, acks[5].seq)
        assert stored.data == b'{"n": 5}'
        assert stored.headers is not None
        assert stored.headers["Nats-Msg-Id"] == "p-5"
        assert stored.headers["X-Note"] == "two  lines"  # as nats-py's publish encodes it
        info = await client.js.stream_info(queue.stream)
        assert info.state.messages == 20  # not the discarded one, not the duplicate
        assert not requests._waiting

        other = await nats.connect(nats_server.url)
        closing = Requests(other)
        await closing.ready()
        late = closing.prepare(subject, b"late", headers={"Nats-Msg-Id": "late"})
        await other.close()
        with pytest.raises(nats.errors.ConnectionClosedError):
            await closing.write([late])
        assert late.reply.cancelled()


async def test_requests_sent_now_hand_each_reply_to_its_callback(nats_server: NatsServer) -> None:
    """Requests.send_now (the worker's double acks): one write, each reply to its callback, in
    the order sent; a bad subject, a silent responder past the timeout and a closed connection
    reach the callback as nats-py's errors, never from within send_now."""
    import nats
    import nats.errors

    async with connected(nats_server) as client, fresh_queue(client) as queue:
        requests = client.requests
        subject = constants.subject(client.namespace, queue.name, 0)
        with pytest.raises(RuntimeError, match="ready"):
            Requests(client.nc).send_now([(subject, b"x", lambda reply, error: None)])
        await requests.ready()
        got: list[tuple[int, Msg | None, BaseException | None]] = []
        done = asyncio.Event()

        def callback(i: int) -> Callable[[Msg | None, BaseException | None], None]:
            def call(reply: Msg | None, error: BaseException | None) -> None:
                got.append((i, reply, error))
                if len(got) == 21:
                    done.set()

            return call

        sent = [(subject, b'{"n": %d}' % i, callback(i)) for i in range(20)]
        requests.send_now([*sent[:10], ("bad subject", b"x", callback(99)), *sent[10:]])
        assert got == []  # not even the bad subject's callback runs inside send_now
        await asyncio.wait_for(done.wait(), 10)
        assert [i for i, _, _ in got if i != 99] == list(range(20))
        bad = next(e for i, _, e in got if i == 99)
        assert isinstance(bad, nats.errors.BadSubjectError)
        acks = [pub_ack(reply) for i, reply, _ in got if reply is not None]
        assert [a.seq for a in acks] == list(range(acks[0].seq, acks[0].seq + 20))
        assert (await client.js.get_msg(queue.stream, acks[7].seq)).data == b'{"n": 7}'
        assert not requests._waiting

        silent = await client.nc.subscribe(unique("silent"))
        late: list[BaseException | None] = []
        requests.send_now([(silent.subject, b"", lambda _, e: late.append(e))], timeout=0.3)
        await _until(lambda: bool(late), "the silent request's timeout")
        assert isinstance(late[0], nats.errors.TimeoutError)
        await silent.unsubscribe()

        other = await nats.connect(nats_server.url)
        closing = Requests(other)
        await closing.ready()
        await other.close()
        failed: list[BaseException | None] = []
        closing.send_now([(subject, b"late", lambda _, e: failed.append(e))])
        assert failed == []
        await _until(lambda: bool(failed), "the closed connection's error")
        assert isinstance(failed[0], nats.errors.ConnectionClosedError)
        assert not closing._waiting


async def _until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_direct_subscriptions_call_their_function_in_order_and_survive(
    tmp_path: Path,
) -> None:
    """DirectNATS: messages of a direct subscription reach its plain function in order, with
    their headers; a function that raises loses only that message; ordinary subscriptions on
    the same connection still work; after a server restart the subscription is there again;
    unsubscribed, it gets nothing more."""
    server = NatsServer(tmp_path / "nats")
    server.start()
    track([node.process for node in server.nodes])
    nc = DirectNATS()
    try:
        await nc.connect(server.url, reconnect_time_wait=0.2, max_reconnect_attempts=-1)
        got: list[tuple[str, str | None]] = []
        loop_tasks = len(asyncio.all_tasks())

        def seen(msg: Msg) -> None:
            if msg.data == b"boom":
                raise RuntimeError("a bad message")
            got.append((msg.data.decode(), (msg.headers or {}).get("K")))

        sub = await nc.subscribe_direct("direct.>", seen)
        assert len(asyncio.all_tasks()) <= loop_tasks + 1  # nats-py's idle task, no more
        ordinary: list[bytes] = []

        async def plain(msg: Msg) -> None:
            ordinary.append(msg.data)

        await nc.subscribe("plain", cb=plain)
        for i in range(50):
            await nc.publish("direct.a", str(i).encode(), headers={"K": f"v{i}"} if i % 2 else None)
        await nc.publish("direct.b", b"boom")
        await nc.publish("direct.b", b"after")
        await nc.publish("plain", b"p")
        await _until(lambda: len(got) == 51 and ordinary == [b"p"], "the messages")
        assert got[:3] == [("0", None), ("1", "v1"), ("2", None)]
        assert [g[0] for g in got] == [*(str(i) for i in range(50)), "after"]
        assert nc.is_connected

        server.nodes[0].process.kill()
        await _until(lambda: not nc.is_connected, "the disconnect")
        server.restart_node(0)
        await _until(lambda: nc.is_connected, "the reconnect", timeout=30)
        await nc.publish("direct.a", b"again")
        await _until(lambda: got[-1][0] == "again", "a message after the reconnect")

        await sub.unsubscribe()
        assert not nc._direct
        await nc.publish("direct.a", b"gone")
        await nc.flush()
        await asyncio.sleep(0.2)
        assert got[-1][0] == "again"
    finally:
        await nc.close()
        server.stop()
