"""Kadence SDK and worker runtime: the run protocol, the publish/consume client, tasks and storage.

This package is what task authors and worker pods import. It depends on nats-py, minio and
pydantic, and never on the operator (``kadence_operator``); only the Lease lock module talks to
Kubernetes.
"""

from kadence.app import App, Context, Fail, Retry
from kadence.client import KadenceClient
from kadence.storage import Cancelled

__all__ = ["App", "Cancelled", "Context", "Fail", "KadenceClient", "Retry"]
