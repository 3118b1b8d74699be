"""The fault suite (issue #29): a seeded, bounded fault injection on the real stack.

One run starts its own servers (etcd + kube-apiserver, nats-server, SeaweedFS S3), two operator
replicas and three workers as real processes, creates a workload of Jobs covering every
``concurrencyPolicy`` and ``catchUp.policy``, injects faults at times drawn from
``random.Random(seed)``, lets the system settle, and checks invariants against three sources that
do not share state: the Jobs' status (Kubernetes), the results stream (NATS) and the outputs (S3).

- :mod:`.workload` the Queues and Jobs (pure data) and the schedule's slots;
- :mod:`.faultapp` the task the workers run;
- :mod:`.stack` the processes: start, signal, restart, stop for sure;
- :mod:`.apiproxy`, :mod:`.tcpproxy` the proxies the API-error and partition faults switch,
  :mod:`.clockjump` the clock jumps, :mod:`.procenv` the proxies' environment;
- :mod:`.faults` the plan (pure, from the seed) and its executor;
- :mod:`.sources` reads the three sources into one snapshot;
- :mod:`.invariants` the checks (pure, over the snapshot);
- :mod:`.verdict` verdicts and the table printed at the end;
- :mod:`.run` one whole run, used by ``test_faults.py`` (bounded) and ``soak.py`` (the CLI).

See docs/reliability.md.
"""
