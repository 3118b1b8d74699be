"""Real servers for tests and for the local stack, started on 127.0.0.1.

This package starts the servers Kadence talks to as child processes on free loopback ports with
temporary data directories: etcd + kube-apiserver (+ kube-controller-manager), nats-server with
JetStream, and SeaweedFS's S3 gateway. It waits for each to be ready with a timeout, stops them on
exit (also on failure), and keeps each server's log so a failing test can show its tail.

It is used by the pytest fixtures in ``tests/`` and by ``make demo``; :mod:`~kadence_devstack.kind`
holds the steps that ``make demo-kind`` and ``e2e/`` share to run Kadence on a kind cluster. It is
not part of the operator or the worker at run time, and it never fakes a server: if a binary cannot
be found or built, it raises :class:`~kadence_devstack.procs.SetupError` with one line saying what
to provide.
"""
