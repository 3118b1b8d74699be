"""The fault suite at a bounded size (issue #29; docs/reliability.md).

``test_faults_keep_every_invariant`` is one whole run on real processes (about 3 minutes on
2 vCPUs): every fault kind once, at seeded times, then the invariants. ``make soak`` runs the same
code for longer. The other tests here are pure: the plan is seeded and bounded.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from tests.faults import clockjump, faults, run, soak, verdict, workload
from tests.faults import stack as stacks

REPO = Path(__file__).resolve().parents[2]
#: The seed of the bounded run (the issue's number); ``make soak SEED=..`` tries others.
SEED = 29
#: Seconds of faults in the bounded run: it runs each of the 10 kinds once even when they take
#: longer.
DURATION = 90.0


def test_the_plan_is_seeded_and_covers_every_kind() -> None:
    first = faults.plan(SEED, duration=DURATION)
    assert first == faults.plan(SEED, duration=DURATION)
    assert first != faults.plan(SEED + 1, duration=DURATION)
    assert first.kinds() == set(faults.ALL_KINDS)
    offsets = [f.at for f in first.faults]
    assert offsets == sorted(offsets)
    # One at a time: each fault is planned to end before the next begins.
    for fault, after in zip(first.faults, first.faults[1:], strict=False):
        assert fault.at + fault.estimate < after.at


def test_api_errors_fail_a_seeded_fraction_through_the_proxy() -> None:
    plan = faults.plan(SEED, duration=DURATION, kinds=(faults.FaultKind.API_ERRORS,))
    assert plan == faults.plan(SEED, duration=DURATION, kinds=(faults.FaultKind.API_ERRORS,))
    for fault in plan.faults:
        assert fault.target == "kube-apiserver (proxy)"
        assert 5.0 <= fault.hold <= 15.0
        assert faults.API_ERROR_RATES[0] <= fault.rate <= faults.API_ERROR_RATES[1]
    described = plan.faults[0].describe()
    assert described.startswith("api-errors kube-apiserver (proxy): ")
    assert "of requests answered 409/429, failing" in described


def test_clock_jumps_move_one_replica_forward_or_back() -> None:
    kinds = (faults.FaultKind.CLOCK_JUMP,)
    plan = faults.plan(SEED, duration=600, kinds=kinds)
    assert plan == faults.plan(SEED, duration=600, kinds=kinds)
    for fault in plan.faults:
        assert fault.target in stacks.OPERATOR_IDS
        assert faults.CLOCK_JUMPS[0] <= abs(fault.jump) <= faults.CLOCK_JUMPS[1]
        assert 5.0 <= fault.hold <= 15.0
    assert {f.jump > 0 for f in plan.faults} == {True, False}
    assert {f.target for f in plan.faults} == set(stacks.OPERATOR_IDS)
    fault = plan.faults[0]
    assert fault.describe() == (
        f"clock-jump {fault.target}: wall clock {fault.jump:+.1f}s, held {fault.hold:.1f}s"
    )


def test_a_worker_partition_cuts_one_worker_off_for_longer_than_its_ack_wait() -> None:
    kind = faults.FaultKind.WORKER_PARTITION
    assert kind.value == "worker-partition"
    plan = faults.plan(SEED, duration=600, kinds=(kind,))
    assert plan == faults.plan(SEED, duration=600, kinds=(kind,))
    assert len(plan.faults) > 10
    ack_wait = {w.name: workload.queue_plan(w.queue).ack_wait for w in workload.WORKERS}
    for fault in plan.faults:
        assert fault.kind is kind
        assert fault.target in ack_wait
        assert ack_wait[fault.target] + 1.0 <= fault.hold <= ack_wait[fault.target] + 6.0
    # Every worker, with and without the API server, over a long plan.
    assert {f.target for f in plan.faults} == set(ack_wait)
    assert {f.api for f in plan.faults} == {True, False}
    cut = next(f for f in plan.faults if f.api)
    assert cut.describe() == (
        f"worker-partition {cut.target} from NATS and the API server, cut off {cut.hold:.1f}s"
    )
    only_nats = next(f for f in plan.faults if not f.api)
    assert only_nats.describe().startswith(f"worker-partition {only_nats.target} from NATS, ")
    # Part of every plan with all kinds.
    assert kind in faults.plan(SEED, duration=DURATION).kinds()


def test_no_kinds_no_faults() -> None:
    assert faults.plan(SEED, duration=DURATION, kinds=()).faults == ()


def test_a_longer_plan_fills_its_duration() -> None:
    plan = faults.plan(1, duration=600)
    assert plan.kinds() == set(faults.ALL_KINDS)
    assert 540 < plan.length <= 600


#: Default plans (one nats-server, every kind, 600 s) as drawn before the cluster mode existed
#: (commit 316324e): seed -> (digest of :func:`_fingerprint`, number of faults). Seeds soaked before
#: the cluster mode must keep their plans.
DEFAULT_PLANS = {
    1: ("6eb484979e6c0961", 35),
    2: ("eab63d4ae199da58", 36),
    3: ("3e26c9d36e9a89bf", 34),
    29: ("5f530e6a6b6c2d90", 38),
}


def _fingerprint(plan: faults.FaultPlan) -> str:
    rows = [
        [f.at, f.kind.value, f.target, f.hold, f.signal, f.rate, f.seed, f.jump, f.api]
        for f in plan.faults
    ]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


def test_default_plans_are_the_ones_drawn_before_the_cluster_mode() -> None:
    for seed, (digest, count) in DEFAULT_PLANS.items():
        plan = faults.plan(seed, duration=600)
        assert (_fingerprint(plan), len(plan.faults)) == (digest, count), seed
        assert plan == faults.plan(seed, duration=600, nats_cluster=1)
        assert faults.FaultKind.NATS_NODE_KILL not in plan.kinds()
    assert faults.FaultKind.NATS_NODE_KILL not in faults.ALL_KINDS
    assert faults.kinds_for(1) == faults.ALL_KINDS
    assert run.RunConfig(seed=1, duration=1, workdir=REPO).fault_kinds == faults.ALL_KINDS
    # Against one nats-server there is no node to kill.
    with pytest.raises(ValueError, match="needs a NATS cluster"):
        faults.plan(1, duration=600, kinds=(faults.FaultKind.NATS_NODE_KILL,))
    with pytest.raises(SystemExit):
        soak.main(["--kinds", "nats-node-kill,worker-kill"])


def test_a_cluster_plan_kills_nats_nodes() -> None:
    kind = faults.FaultKind.NATS_NODE_KILL
    assert kind.value == "nats-node-kill"
    config = run.RunConfig(seed=1, duration=1, workdir=REPO, nats_cluster=3)
    assert config.fault_kinds == faults.CLUSTER_KINDS == (*faults.ALL_KINDS, kind)
    for seed in (*DEFAULT_PLANS, 6):
        plan = faults.plan(seed, duration=600, nats_cluster=3)
        assert plan == faults.plan(seed, duration=600, nats_cluster=3)
        assert plan.kinds() == set(faults.CLUSTER_KINDS)
        # nats-restart takes the whole cluster down.
        restarts = [f for f in plan.faults if f.kind is faults.FaultKind.NATS_RESTART]
        assert {f.target for f in restarts} == {"nats cluster (all 3 nodes)"}
    assert 540 < faults.plan(1, duration=600, nats_cluster=3).length <= 600
    # The verification run's kinds.
    few = (kind, faults.FaultKind.WORKER_KILL, faults.FaultKind.OPERATOR_KILL)
    assert kind in faults.plan(6, duration=120, kinds=few, nats_cluster=3).kinds()

    kills = faults.plan(SEED, duration=600, kinds=(kind,), nats_cluster=3).faults
    assert len(kills) > 10
    for fault in kills:
        assert fault.target in {"n0", "n1", "n2"}  # kadence_devstack's node names
        assert 2.0 <= fault.hold <= 10.0
        assert fault.signal == "SIGKILL"
    assert {f.target for f in kills} == {"n0", "n1", "n2"}
    assert (
        kills[0].describe()
        == f"nats-node-kill {kills[0].target} (SIGKILL), down {kills[0].hold:.1f}s"
    )
    with pytest.raises(ValueError, match="nats_cluster"):
        faults.plan(1, duration=600, nats_cluster=2)


def test_queues_are_replicated_against_a_cluster() -> None:
    queue = workload.QUEUES[0]
    assert "replicas" not in workload.queue_manifest(queue)["spec"]
    assert workload.queue_manifest(queue, replicas=3)["spec"]["replicas"] == 3


@pytest.mark.integration
@pytest.mark.timeout(360)
def test_faults_keep_every_invariant(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)[-150:]
    config = run.RunConfig(
        seed=SEED,
        duration=DURATION,
        workdir=tmp_path,
        settle_timeout=60.0,
        logs_to=REPO / "test-logs" / safe,
    )
    report = run.execute(config, print)
    print(run.render(report))  # the whole table, in the captured output
    assert not report.error, report.error
    assert report.plan.kinds() == set(faults.ALL_KINDS)
    # Only clock-jump may be skipped, and only where libfaketime is not installed.
    allowed = {clockjump.MISSING}
    assert not [r.fault.describe() for r in report.records if r.skipped not in {"", *allowed}]
    broken = {v.invariant for v in verdict.failures(report.verdicts)}
    assert not broken, verdict.summary(report.verdicts) + f"\nlogs: {report.logs}"
