"""Faults: a plan drawn from ``random.Random(seed)`` (pure), and the executor that injects it.

The plan is a list of faults at offsets from the start of the fault phase, each with its target
and how long the target stays down (or frozen). It holds every kind at least once, in a shuffled
order, then more faults of random kinds while they fit in the requested duration; the same seed
gives the same plan. Faults are injected one after the other (a fault's recovery ends before the
next one starts), each logged with its wall-clock time.

A run against a 3-node NATS cluster (``nats_cluster=3``) also draws ``nats-node-kill``, and its
``nats-restart`` restarts every node; a run against one nats-server (the default) never draws
``nats-node-kill``, and its plans are the ones drawn before that kind existed.
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from tests.faults import stack as stacks
from tests.faults import workload


class FaultKind(enum.StrEnum):
    #: SIGKILL a worker mid-work, start it again after ``hold`` seconds.
    WORKER_KILL = "worker-kill"
    #: SIGSTOP a worker for longer than its Queue's ackWait, then SIGCONT.
    WORKER_STOP = "worker-stop"
    #: SIGKILL one operator replica, start it again (same identity) after ``hold`` seconds.
    OPERATOR_KILL = "operator-kill"
    #: SIGKILL both operator replicas, start both again after ``hold`` seconds.
    OPERATORS_KILL = "operators-kill"
    #: Stop nats-server (SIGKILL or SIGTERM), start it again on the same port and data; in a
    #: NATS cluster, every node (the whole of NATS down), started again together.
    NATS_RESTART = "nats-restart"
    #: Stop S3 (SeaweedFS) for 10-20 s, start it again on the same ports and data.
    S3_DOWN = "s3-down"
    #: Stop kube-apiserver (etcd stays up), start it again with the same flags and certificates.
    APISERVER_DOWN = "apiserver-down"
    #: The proxy in front of kube-apiserver answers a seeded fraction of the operators' and
    #: workers' requests with 409 Conflict (writes) or 429 TooManyRequests (any) for ``hold``.
    API_ERRORS = "api-errors"
    #: One operator replica's wall clock jumps ``jump`` seconds (libfaketime, :mod:`.clockjump`),
    #: stays there for ``hold`` seconds, then jumps back; its monotonic clock stays real.
    CLOCK_JUMP = "clock-jump"
    #: Blackhole a worker's connections to nats-server (and, for half the faults, to the API
    #: server) in the TCP proxy in front of them, for longer than its Queue's ackWait; the
    #: worker keeps running. Then heal: the held bytes arrive.
    WORKER_PARTITION = "worker-partition"
    #: SIGKILL one node of the 3-node NATS cluster (a stream's leader or not), start it again on
    #: the same ports and store after ``hold`` seconds. Cluster runs only (``nats_cluster=3``).
    NATS_NODE_KILL = "nats-node-kill"


#: Kinds that need a NATS cluster: never drawn against one nats-server.
CLUSTER_ONLY = frozenset({FaultKind.NATS_NODE_KILL})
#: Every kind of a run against one nats-server (the default), in the order the seeded plans
#: were drawn from before the cluster-only kinds existed: a seed's plan stays the same.
ALL_KINDS = tuple(k for k in FaultKind if k not in CLUSTER_ONLY)
#: Every kind of a run against a NATS cluster.
CLUSTER_KINDS = (*ALL_KINDS, *(k for k in FaultKind if k in CLUSTER_ONLY))
#: The sizes of NATS a run can have: one nats-server, or a 3-node JetStream cluster.
NATS_CLUSTER_SIZES = (1, 3)


def kinds_for(nats_cluster: int) -> tuple[FaultKind, ...]:
    """Every kind a run against ``nats_cluster`` NATS nodes can inject."""
    return ALL_KINDS if nats_cluster == 1 else CLUSTER_KINDS


#: Seconds a target takes to come back after its hold (measured on a 2-vCPU machine with the
#: whole stack running, rounded up): used to lay the plan out, never to wait.
RECOVERY: dict[FaultKind, float] = {
    FaultKind.WORKER_KILL: 4.0,
    FaultKind.WORKER_STOP: 0.5,
    FaultKind.OPERATOR_KILL: 6.0,
    FaultKind.OPERATORS_KILL: 8.0,
    FaultKind.NATS_RESTART: 2.0,
    FaultKind.S3_DOWN: 8.0,
    FaultKind.APISERVER_DOWN: 12.0,
    FaultKind.API_ERRORS: 2.0,
    FaultKind.CLOCK_JUMP: 6.0,  # a shard Lease misjudged during the jump: held again
    FaultKind.WORKER_PARTITION: 1.0,
    FaultKind.NATS_NODE_KILL: 4.0,  # started, then healthy: its streams caught up
}
#: The fraction of requests an ``api-errors`` fault answers with 409/429 is drawn from this range.
API_ERROR_RATES = (0.3, 0.5)
#: The size in seconds of a ``clock-jump`` (forward or back) is drawn from this range.
CLOCK_JUMPS = (20.0, 90.0)


@dataclass(frozen=True)
class PlannedFault:
    at: float  # seconds after the fault phase starts
    kind: FaultKind
    target: str
    hold: float  # seconds the target is down or frozen
    signal: str = ""  # how nats-server (or a node of the cluster) is stopped: SIGKILL or SIGTERM
    rate: float = 0.0  # api-errors: the fraction of requests answered with 409/429
    seed: int = 0  # api-errors: the seed of the proxy's choices (which request, which code)
    jump: float = 0.0  # clock-jump: seconds the wall clock moves (negative: back)
    api: bool = False  # worker-partition: the API server is cut off too, not only NATS

    @property
    def estimate(self) -> float:
        """Seconds from injection to recovery, as planned."""
        return self.hold + RECOVERY[self.kind]

    def describe(self) -> str:
        how = f" ({self.signal})" if self.signal else ""
        if self.kind is FaultKind.API_ERRORS:
            how = f": {self.rate:.0%} of requests answered 409/429"
        if self.kind is FaultKind.CLOCK_JUMP:
            jump = f"wall clock {self.jump:+.1f}s"
            return f"{self.kind.value} {self.target}: {jump}, held {self.hold:.1f}s"
        verb = {FaultKind.WORKER_STOP: "frozen", FaultKind.API_ERRORS: "failing"}.get(
            self.kind, "down"
        )
        if self.kind is FaultKind.WORKER_PARTITION:
            how = " from NATS and the API server" if self.api else " from NATS"
            verb = "cut off"
        return f"{self.kind.value} {self.target}{how}, {verb} {self.hold:.1f}s"


@dataclass(frozen=True)
class FaultPlan:
    seed: int
    faults: tuple[PlannedFault, ...]

    @property
    def length(self) -> float:
        """Seconds from the start of the phase to the planned end of the last fault."""
        return max((f.at + f.estimate for f in self.faults), default=0.0)

    def kinds(self) -> set[FaultKind]:
        return {f.kind for f in self.faults}


def _draw(kind: FaultKind, rng: random.Random, *, at: float, nats_cluster: int = 1) -> PlannedFault:
    workers = [w.name for w in workload.WORKERS]
    ack_wait = {w.name: workload.queue_plan(w.queue).ack_wait for w in workload.WORKERS}
    if kind is FaultKind.WORKER_KILL:
        return PlannedFault(at, kind, rng.choice(workers), rng.uniform(0.5, 3.0))
    if kind is FaultKind.WORKER_STOP:
        target = rng.choice(workers)
        return PlannedFault(at, kind, target, ack_wait[target] + rng.uniform(1.0, 4.0))
    if kind is FaultKind.OPERATOR_KILL:
        # Sometimes back before its shard Leases expire (6 s), sometimes after.
        return PlannedFault(at, kind, rng.choice(stacks.OPERATOR_IDS), rng.uniform(1.0, 9.0))
    if kind is FaultKind.OPERATORS_KILL:
        return PlannedFault(at, kind, "+".join(stacks.OPERATOR_IDS), rng.uniform(2.0, 9.0))
    if kind is FaultKind.NATS_RESTART:
        how = rng.choice(["SIGKILL", "SIGTERM"])
        target = "nats-server" if nats_cluster == 1 else f"nats cluster (all {nats_cluster} nodes)"
        return PlannedFault(at, kind, target, rng.uniform(0.5, 4.0), signal=how)
    if kind is FaultKind.NATS_NODE_KILL:
        node = f"n{rng.randrange(nats_cluster)}"  # kadence_devstack's node names
        return PlannedFault(at, kind, node, rng.uniform(2.0, 10.0), signal="SIGKILL")
    if kind is FaultKind.S3_DOWN:
        return PlannedFault(at, kind, "s3", rng.uniform(10.0, 20.0))
    if kind is FaultKind.API_ERRORS:
        hold = rng.uniform(5.0, 15.0)
        rate = round(rng.uniform(*API_ERROR_RATES), 2)
        seed = rng.randrange(2**31)
        return PlannedFault(at, kind, "kube-apiserver (proxy)", hold, rate=rate, seed=seed)
    if kind is FaultKind.CLOCK_JUMP:
        target = rng.choice(stacks.OPERATOR_IDS)
        jump = round(rng.choice((-1, 1)) * rng.uniform(*CLOCK_JUMPS), 1)
        return PlannedFault(at, kind, target, rng.uniform(5.0, 15.0), jump=jump)
    if kind is FaultKind.WORKER_PARTITION:
        target = rng.choice(workers)
        hold = ack_wait[target] + rng.uniform(1.0, 6.0)
        return PlannedFault(at, kind, target, hold, api=rng.random() < 0.5)
    return PlannedFault(at, kind, "kube-apiserver", rng.uniform(5.0, 12.0))


def plan(
    seed: int,
    *,
    duration: float,
    kinds: Sequence[FaultKind] | None = None,
    nats_cluster: int = 1,
    first_at: float = 6.0,
    gaps: tuple[float, float] = (2.0, 6.0),
) -> FaultPlan:
    """Every kind of ``kinds`` once in a seeded order, then random kinds while they end within
    ``duration`` seconds (no kinds: no faults). Pure: the same arguments give the same plan.

    ``kinds`` defaults to every kind of the run's NATS (:func:`kinds_for`): against one
    nats-server (``nats_cluster=1``) that is :data:`ALL_KINDS`, which draws the same plans as
    before the cluster mode existed; against a 3-node cluster it adds ``nats-node-kill``."""
    if nats_cluster not in NATS_CLUSTER_SIZES:
        raise ValueError(f"nats_cluster must be one of {NATS_CLUSTER_SIZES}, not {nats_cluster}")
    if kinds is None:
        kinds = kinds_for(nats_cluster)
    if nats_cluster == 1 and (needs := sorted(k.value for k in CLUSTER_ONLY & set(kinds))):
        raise ValueError(f"{', '.join(needs)} needs a NATS cluster (nats_cluster=3)")
    if not kinds:  # a control run: the workload without faults
        return FaultPlan(seed, ())
    rng = random.Random(seed)
    mandatory = list(kinds)
    rng.shuffle(mandatory)
    faults: list[PlannedFault] = []
    at = first_at
    while True:
        required = bool(mandatory)
        kind = mandatory.pop(0) if mandatory else rng.choice(list(kinds))
        fault = _draw(kind, rng, at=at, nats_cluster=nats_cluster)
        if not required and at + fault.estimate > duration:
            break
        faults.append(fault)
        at += fault.estimate + rng.uniform(*gaps)
    return FaultPlan(seed, tuple(faults))


# -- the executor ----------------------------------------------------------------------------


@dataclass
class FaultRecord:
    fault: PlannedFault
    started: datetime
    offset: float  # seconds after the phase started
    took: float = 0.0  # seconds to recovery
    skipped: str = ""  # why it was not injected


@dataclass
class Injector:
    """Injects a :class:`FaultPlan` into a running stack, logging each fault as it goes."""

    stack: stacks.Stack
    say: stacks.Say
    #: A one-line view of the Jobs, printed between faults (None: nothing to print).
    progress: Callable[[], str | None] = lambda: None
    progress_every: float = 15.0
    records: list[FaultRecord] = field(default_factory=list)

    def run(self, plan: FaultPlan, *, until: datetime) -> list[FaultRecord]:
        """Inject the plan's faults at their offsets; none starts after ``until``."""
        t0 = time.monotonic()
        last_progress = t0
        for fault in plan.faults:
            while (left := t0 + fault.at - time.monotonic()) > 0:
                if time.monotonic() - last_progress >= self.progress_every:
                    self._progress(t0)
                    last_progress = time.monotonic()
                time.sleep(min(left, 1.0))
            offset = time.monotonic() - t0
            record = FaultRecord(fault, datetime.now(UTC), offset)
            self.records.append(record)
            if record.started + timedelta(seconds=fault.estimate) > until:
                record.skipped = "it would not end before the Jobs' endAt"
                self.say(f"[{offset:6.1f}s] skipped {fault.describe()}: {record.skipped}")
                continue
            if fault.kind is FaultKind.CLOCK_JUMP and self.stack.clocks.unavailable:
                record.skipped = self.stack.clocks.unavailable
                self.say(f"[{offset:6.1f}s] skipped {fault.describe()}: {record.skipped}")
                continue
            self.say(f"[{offset:6.1f}s] {_clock(record.started)} inject {fault.describe()}")
            started = time.monotonic()
            self._inject(fault)
            record.took = time.monotonic() - started
            self.say(f"[{time.monotonic() - t0:6.1f}s] recovered after {record.took:.1f}s")
            self._progress(t0)
            last_progress = time.monotonic()
        return self.records

    def _progress(self, t0: float) -> None:
        try:
            line = self.progress()
        except Exception as error:  # the API server may be the one that is down
            line = f"(status unavailable: {type(error).__name__})"
        if line:
            self.say(f"[{time.monotonic() - t0:6.1f}s] {line}")

    def _unhealthy(self, why: str) -> None:
        """Say why NATS is not healthy yet after a restart (the run goes on: the checks judge)."""
        if why:
            self.say(f"  {why}")

    def _inject(self, fault: PlannedFault) -> None:
        stack = self.stack
        kind = fault.kind
        if kind is FaultKind.WORKER_KILL:
            stack.workers[fault.target].kill()
            time.sleep(fault.hold)
            stack.start_worker(fault.target)
        elif kind is FaultKind.WORKER_STOP:
            proc = stack.workers[fault.target]
            stacks.freeze(proc)
            try:
                time.sleep(fault.hold)
            finally:
                stacks.thaw(proc)
        elif kind is FaultKind.OPERATOR_KILL:
            stack.operators[fault.target].kill()
            time.sleep(fault.hold)
            stack.start_operators(fault.target)
        elif kind is FaultKind.OPERATORS_KILL:
            for proc in stack.operators.values():
                proc.kill()
            time.sleep(fault.hold)
            stack.start_operators(*stack.operators)
        elif kind is FaultKind.NATS_RESTART:
            nodes = range(len(stack.nats.nodes))  # one nats-server, or every node of a cluster
            for index in nodes:
                node = stack.nats.nodes[index].process
                if fault.signal == "SIGKILL":
                    node.kill()
                else:
                    node.stop()
            time.sleep(fault.hold)
            self._unhealthy(stack.restart_nats(*nodes))
        elif kind is FaultKind.NATS_NODE_KILL:
            index = stack.nats_node(fault.target)
            before = stack.nats_leaders()
            led = sorted(group for group, leader in before.items() if leader == fault.target)
            groups = f"{len(led)} of {len(before)} raft groups"
            self.say(f"  {fault.target} leads {groups}: {', '.join(led) or '-'}")
            stack.nats.nodes[index].process.kill()
            time.sleep(fault.hold)
            self._unhealthy(stack.restart_nats(index))
            after = stack.nats_leaders()
            moved = [
                f"{g} {before[g]}->{after[g]}"
                for g in sorted(before)
                if g in after and after[g] != before[g]
            ]
            # As a running node sees them now: a group may still be electing (its new leader
            # is in the nats-server logs), or have elected the restarted node again.
            self.say(f"  leaders moved: {', '.join(moved) or 'none'}")
        elif kind is FaultKind.S3_DOWN:
            stack.s3.stop()
            time.sleep(fault.hold)
            stack.s3.restart()
        elif kind is FaultKind.APISERVER_DOWN:
            stack.apiserver().stop()
            time.sleep(fault.hold)
            stack.start_apiserver()
        elif kind is FaultKind.API_ERRORS:
            stack.proxy.fail(rate=fault.rate, seed=fault.seed)
            try:
                time.sleep(fault.hold)
            finally:
                stack.proxy.heal()
        elif kind is FaultKind.CLOCK_JUMP:
            stack.clocks.jump(fault.target, fault.jump)
            try:
                time.sleep(fault.hold)
            finally:
                stack.clocks.jump(fault.target, 0.0)
        elif kind is FaultKind.WORKER_PARTITION:
            stack.partition_worker(fault.target, api=fault.api)
            try:
                time.sleep(fault.hold)
            finally:
                stack.heal_partition()


def _clock(moment: datetime) -> str:
    return moment.strftime("%H:%M:%S")
