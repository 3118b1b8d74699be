"""The Kadence operator: reconciles Queue and Job resources of the ``kadence.io`` group.

Layers, from pure to effectful: ``api`` (pydantic models, the single source of the CRD schema),
``scheduling`` (pure time math and policy decisions), then the I/O edges that talk to the
Kubernetes API and NATS JetStream. The pure layers import none of kopf, kubernetes, nats or minio.
"""
