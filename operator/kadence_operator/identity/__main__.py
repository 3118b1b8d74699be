"""``python -m kadence_operator.identity``: the NATS auth callout service."""

from kadence_operator.identity.callout import main

main()
