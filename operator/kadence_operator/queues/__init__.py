"""Queue reconciliation: JetStream streams and consumers, dead letters, status, worker Deployments.

``streams`` turns a QueueSpec into JetStream configuration (pure) and applies it; ``deadletter``
moves messages JetStream gave up on into the Queue's DLQ stream; ``workers`` renders the managed
worker Deployment and its autoscaling decision (pure).
"""
