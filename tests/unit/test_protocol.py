"""The wire protocol: round trips, and DecodeError — never anything else — for bad messages."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kadence import constants
from kadence.protocol import (
    MAX_MESSAGE_BYTES,
    MAX_PAYLOAD_BYTES,
    MAX_RESULTS_BYTES,
    Backoff,
    CancelRequest,
    ConcurrencyPolicy,
    DecodeError,
    JobRef,
    ObjectRef,
    OutputLocation,
    OutputObject,
    OversizeError,
    ResultBatch,
    RetryPolicy,
    RunError,
    RunRequest,
    RunResult,
    RunState,
    batch_dedupe_id,
    decode_cancel,
    decode_result,
    decode_results,
    decode_run,
    encode,
    encode_batch,
    salvage_ids,
)

JOB = JobRef(namespace="analytics", name="nightly", uid="0b5e-11")
SLOT = datetime(2024, 5, 1, 2, 0, tzinfo=UTC)


def full_request() -> RunRequest:
    return RunRequest(
        run_id="0b5e-11-20240501T0200Z",
        task="reports.build",
        payload={"day": "2024-05-01", "regions": ["eu", "us"], "n": 3, "ok": True, "x": None},
        job=JOB,
        input=ObjectRef(bucket="inputs", key="day.csv"),
        output=OutputLocation(bucket="out", prefix="analytics/nightly/r1/"),
        scheduled_at=SLOT,
        timeout_seconds=600,
        retry=RetryPolicy(
            max_attempts=5,
            backoff=Backoff(initial_seconds=2, factor=3, max_seconds=60),
            non_retryable_errors=("ValueError",),
        ),
        concurrency_policy=ConcurrencyPolicy.FORBID,
        ack_wait_seconds=20,
        dlq_subject="kadence-dlq.analytics.reports",
        partition_key="nightly",
    )


def test_run_request_round_trip() -> None:
    request = full_request()
    assert decode_run(encode(request)) == request


def test_minimal_run_request_defaults() -> None:
    request = decode_run(b'{"run_id": "r1", "task": "demo.echo"}')
    assert request.version == 1
    assert request.payload is None
    assert request.retry.max_attempts == 3
    assert request.concurrency_policy is ConcurrencyPolicy.ALLOW
    assert not request.concurrency_policy.needs_lock
    assert request.ack_wait_seconds == 30.0


def test_run_result_round_trip_and_dedupe_id() -> None:
    result = RunResult(
        run_id="r1",
        attempt=2,
        job=JOB,
        state=RunState.SUCCEEDED,
        scheduled_at=SLOT,
        started_at=SLOT,
        finished_at=SLOT,
        outputs=(OutputObject(uri="s3://b/k", size=3, etag="abc"),),
        fencing_token=7,
        worker="w-1",
    )
    assert decode_result(encode(result)) == result
    assert result.dedupe_id == "r1:2:Succeeded"


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    request = decode_run(b'{"run_id": "r1", "task": "t", "added_in_v1_1": {"x": 1}}')
    assert request.run_id == "r1"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "run request"),
        (b'"just a string"', "run request"),
        (b'{"version": 2, "run_id": "r1", "task": "t"}', "'version'"),
        (b'{"task": "t"}', "'run_id'"),
        (b'{"run_id": "", "task": "t"}', "'run_id'"),
        (b'{"run_id": "r1"}', "'task'"),
        (b'{"run_id": "r1", "task": "t", "concurrency_policy": "Sometimes"}', "concurrency_policy"),
        (b'{"run_id": "r1", "task": "t", "retry": {"max_attempts": "many"}}', "retry.max_attempts"),
        (b'{"run_id": "r1", "task": "t", "job": {"name": "j"}}', "job.namespace"),
    ],
)
def test_bad_run_requests_raise_decode_error_naming_the_problem(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_run(data)
    assert message in str(info.value)
    assert not isinstance(info.value, OversizeError)


def test_cancel_request_round_trip() -> None:
    request = CancelRequest(job_uid="u-1", run_ids=("s-a", "s-b"))
    assert json.loads(encode(request)) == {
        "version": 1,
        "job_uid": "u-1",
        "run_ids": ["s-a", "s-b"],
    }
    assert decode_cancel(encode(request)) == request


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"u-1", "not valid JSON"),  # a bare Job uid is not a cancel request
        (b'{"run_ids": ["s-a"]}', "'job_uid'"),
        (b'{"job_uid": "u-1"}', "'run_ids'"),
        (b'{"version": 2, "job_uid": "u-1", "run_ids": []}', "'version'"),
    ],
)
def test_bad_cancel_requests_raise_decode_error_naming_the_problem(
    data: bytes, message: str
) -> None:
    with pytest.raises(DecodeError, match="cancel request") as info:
        decode_cancel(data)
    assert message in str(info.value)


def test_oversize_payload_is_refused() -> None:
    payload = "x" * (MAX_PAYLOAD_BYTES + 1)
    data = json.dumps({"run_id": "r1", "task": "t", "payload": payload}).encode()
    assert len(data) < MAX_MESSAGE_BYTES  # the message is fine; its payload is not
    with pytest.raises(OversizeError, match=r"payload is .* over the 65536-byte limit"):
        decode_run(data)


def test_payload_at_the_limit_is_accepted() -> None:
    payload = "x" * (MAX_PAYLOAD_BYTES - 2)  # two bytes of JSON quotes
    decode_run(json.dumps({"run_id": "r1", "task": "t", "payload": payload}).encode())


def test_oversize_message_is_refused_before_parsing() -> None:
    data = b'{"run_id": "r1", "task": "t", "pad": "' + b"x" * MAX_MESSAGE_BYTES + b'"}'
    with pytest.raises(OversizeError, match="over the 262144-byte limit"):
        decode_run(data)
    with pytest.raises(DecodeError):  # an OversizeError is a DecodeError
        decode_result(data)


@given(st.binary(max_size=512))
def test_arbitrary_bytes_raise_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_run(data)
    with contextlib.suppress(DecodeError):
        decode_results(data)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=20,
    )
)
def test_arbitrary_json_raises_only_decode_error(value: object) -> None:
    try:
        decode_run(json.dumps(value).encode())
        decode_result(json.dumps(value).encode())
    except DecodeError:
        pass
    with contextlib.suppress(DecodeError):
        decoded = decode_results(json.dumps(value).encode())
        assert decoded.results or decoded.errors


@pytest.mark.parametrize(
    ("attempt", "delay"), [(1, 2.0), (2, 6.0), (3, 18.0), (4, 54.0), (5, 60.0), (30, 60.0)]
)
def test_backoff_delay(attempt: int, delay: float) -> None:
    assert Backoff(initial_seconds=2, factor=3, max_seconds=60).delay(attempt) == delay


@pytest.mark.parametrize(
    ("state", "final"),
    [
        (RunState.RUNNING, False),
        (RunState.RETRYING, False),
        (RunState.SUCCEEDED, True),
        (RunState.FAILED, True),
        (RunState.DEAD_LETTERED, True),
        (RunState.TIMED_OUT, True),
        (RunState.CANCELLED, True),
    ],
)
def test_result_is_final(state: RunState, final: bool) -> None:
    error = RunError(type="E", message="m", retryable=not final)
    assert RunResult(run_id="r", attempt=1, state=state, error=error).is_final is final


@pytest.mark.parametrize(
    ("data", "run_id", "job"),
    [
        (b'{"run_id": "r1", "task": "t", "payload": "huge"}', "r1", None),
        (
            b'{"run_id": "r1", "job": {"namespace": "a", "name": "b", "uid": "c"}}',
            "r1",
            JobRef(namespace="a", name="b", uid="c"),
        ),
        (b'{"run_id": "r1", "job": {"name": "b"}}', "r1", None),
        (b'{"run_id": 42}', None, None),
        (b"not json", None, None),
        (b"[]", None, None),
        (b"[" * 100_000, None, None),
    ],
)
def test_salvage_ids(data: bytes, run_id: str | None, job: JobRef | None) -> None:
    assert salvage_ids(data) == (run_id, job)


def test_names() -> None:
    assert constants.stream_name("ns", "q") == "KADENCE_ns_q"
    assert constants.subject("ns", "q", 3) == "kadence.ns.q.3"
    assert constants.partition_of_subject("kadence.ns.q.12") == 12
    assert constants.partition_of_subject("kadence-dlq.ns.q") is None
    assert constants.results_subject("ns", constants.ADHOC_JOB) == "kadence-results.ns._adhoc"
    assert constants.lease_name("nightly") == "kadence-job-nightly"
    long = constants.lease_name("a" * 250)
    assert len(long) == 253
    assert long.startswith("kadence-job-aaa")
    assert long != constants.lease_name("a" * 251)


# -- results messages: a single result or a batch ------------------------------------------------


def _result(run_id: str, state: RunState = RunState.SUCCEEDED, attempt: int = 1) -> RunResult:
    return RunResult(
        run_id=run_id,
        attempt=attempt,
        job=JOB,
        state=state,
        started_at=SLOT,
        finished_at=SLOT,
        outputs=(OutputObject(uri=f"s3://out/{run_id}/result.json", size=2, etag="e1"),),
        worker="w-1",
    )


def test_a_single_result_decodes_as_one() -> None:
    result = _result("r1")
    decoded = decode_results(encode(result))
    assert decoded.results == [result]
    assert decoded.errors == []


def test_a_batch_round_trips_in_order() -> None:
    results = [_result("r1"), _result("r2", RunState.FAILED), _result("r3", attempt=2)]
    data = encode_batch(results)
    assert decode_results(data).results == results
    # The same bytes as the model would write (only the version and the results).
    assert ResultBatch.model_validate_json(data).results == tuple(results)


@pytest.mark.parametrize(
    ("ids", "other"),
    [
        (["r1:1:Succeeded", "r2:1:Succeeded"], ["r2:1:Succeeded", "r1:1:Succeeded"]),  # order
        (["r1:1:Succeeded", "r2:1:Succeeded"], ["r1:1:Succeeded"]),  # members
        (["r1:1:Succeeded", "r2:1:Succeeded"], ["r1:1:Succeeded", "r2:2:Succeeded"]),  # attempt
        (["r1:1:Running", "r2:1:Succeeded"], ["r1:1:Succeeded", "r2:1:Succeeded"]),  # state
    ],
)
def test_a_batch_id_depends_on_every_result_id(ids: list[str], other: list[str]) -> None:
    assert batch_dedupe_id(ids) == batch_dedupe_id(list(ids))  # deterministic
    assert batch_dedupe_id(ids).startswith("batch:")
    assert batch_dedupe_id(ids) != batch_dedupe_id(other)


def test_a_batch_model_id_is_that_of_its_results() -> None:
    results = (_result("r1"), _result("r2"))
    batch = ResultBatch(results=results)
    assert batch.dedupe_id == batch_dedupe_id(r.dedupe_id for r in results)


def test_a_bad_batch_entry_is_named_and_the_others_kept() -> None:
    good = [json.loads(encode(_result("r1"))), json.loads(encode(_result("r3")))]
    bad = {"run_id": "r2", "attempt": 0, "state": "Succeeded"}
    data = json.dumps({"version": 1, "results": [good[0], bad, good[1]]}).encode()
    decoded = decode_results(data)
    assert [r.run_id for r in decoded.results] == ["r1", "r3"]
    assert len(decoded.errors) == 1
    assert "result batch entry 1 field 'attempt'" in decoded.errors[0]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{not json", "run result is not valid JSON"),
        (b'{"version": 1, "results": []}', "'results': expected a non-empty list"),
        (b'{"version": 1, "results": {"a": 1}}', "'results': expected a non-empty list"),
        (b'{"version": 2, "results": [{}]}', "unsupported version 2"),
        (b'{"run_id": "r1", "state": "Succeeded"}', "run result field 'attempt'"),
        (b"[1, 2]", "run result field 'message'"),
    ],
)
def test_bad_results_messages_are_named(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_results(data)
    assert message in str(info.value)


def test_an_oversize_results_message_is_refused() -> None:
    data = b'{"run_id": "r1", "pad": "' + b"x" * MAX_RESULTS_BYTES + b'"}'
    with pytest.raises(OversizeError, match=r"results message is .* over the 1048576-byte limit"):
        decode_results(data)


def test_an_empty_batch_cannot_be_encoded() -> None:
    with pytest.raises(ValueError, match="at least one result"):
        encode_batch([])
