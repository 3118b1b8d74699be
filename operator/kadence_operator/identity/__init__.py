"""Workers and clients reach NATS as their Kubernetes ServiceAccount; RBAC decides their Queues.

A NATS auth callout service (:mod:`~kadence_operator.identity.callout`) receives each connection's
ServiceAccount token, checks it with the TokenReview API (:mod:`~.reviews`), asks
SubjectAccessReview which Queues of the token's namespace the identity may ``consume`` from and
``publish`` to, and answers with a user JWT (:mod:`~.natsjwt`) that carries the NATS permissions
:mod:`~.permissions` computes from those answers — the only part that decides, and a pure one.

What it is not: a second source of truth. Nothing is cached or stored; every new connection is
decided from what Kubernetes says at that moment, so granting or revoking a Role takes effect at
the next (re)connect, and a token that Kubernetes no longer accepts gets nothing.
"""
