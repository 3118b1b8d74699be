"""The NATS auth callout service: admits a connection as its Kubernetes ServiceAccount.

nats-server (>= 2.10, ``authorization { auth_callout { issuer, auth_users } }``, config mode)
sends every connection that is not one of ``auth_users`` to ``$SYS.REQ.USER.AUTH`` as an
``authorization_request`` JWT it signed. This service takes the client's CONNECT ``auth_token``
(its projected ServiceAccount token), has Kubernetes review it for the token audience, asks RBAC
which of its namespace's Queues it may ``consume`` from and ``publish`` to, and answers with an
``authorization_response`` carrying a user JWT with exactly the permissions that
:func:`~kadence_operator.identity.permissions.worker_permissions` computes (or the operator's, for
the operator's own ServiceAccount). A refusal carries the reason as the response's ``error``:
nats-server logs it (``Auth callout service returned an error: …``) and sends the client its
generic ``Authorization Violation``.

The service's own connection is a static user of the server config listed in ``auth_users``
(it bypasses the callout). Its password and the issuer's account seed are read from files or the
environment and never logged; neither is any client token. Each decision is logged at INFO with
the identity, the Queues and the client's name.

Run it with ``python -m kadence_operator.identity`` (or ``kadence-nats-callout``); ``--help``
lists the options, each also an environment variable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import ssl
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys
from kubernetes.client.exceptions import ApiException
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from kadence import config
from kadence_operator import kube
from kadence_operator.identity import natsjwt, permissions
from kadence_operator.identity.reviews import Refused, Reviewer

log = logging.getLogger("kadence.identity")

#: Where nats-server sends authorization requests (``server/auth_callout.go``).
AUTH_SUBJECT = "$SYS.REQ.USER.AUTH"
DEFAULT_AUDIENCE = "kadence.io/nats"
DEFAULT_OPERATOR = "kadence-system/kadence-operator"
#: The queue group of the service's subscription: several replicas share the requests.
QUEUE_GROUP = "kadence-identity"


@dataclass(frozen=True)
class Decision:
    """A response JWT and what to log about it (no secrets)."""

    response: str
    summary: str


class CalloutService:
    """Answers nats-server's authorization requests.

    ``operator`` is the ``namespace/name`` of the operator's ServiceAccount, which gets
    :func:`~kadence_operator.identity.permissions.operator_permissions`; ``account`` the account
    users are placed in (nats-server's global account in config mode).
    """

    def __init__(
        self,
        *,
        issuer: nkeys.KeyPair,
        reviewer: Reviewer,
        operator: str = DEFAULT_OPERATOR,
        account: str = permissions.GLOBAL_ACCOUNT,
    ) -> None:
        self._issuer = issuer
        self._reviewer = reviewer
        self._operator = operator
        self._account = account
        self._tasks: set[asyncio.Task[None]] = set()

    async def serve(self, nc: NATS) -> None:
        """Subscribe; each request is answered in a task of its own, so that one slow review
        does not hold up the others (nats-py runs a subscription's callbacks one by one)."""

        async def on_request(msg: Msg) -> None:
            task = asyncio.create_task(self._answer(msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        await nc.subscribe(AUTH_SUBJECT, queue=QUEUE_GROUP, cb=on_request)

    async def _answer(self, msg: Msg) -> None:
        try:
            decision = await self.decide(msg.data.decode(errors="replace"))
        except natsjwt.InvalidJWT as error:
            # Not from a server we can answer: no user nkey to address a response to.
            log.warning("ignored an authorization request: %s", error)
            return
        except Exception:
            log.exception("answering an authorization request failed")
            return
        log.info("%s", decision.summary)
        if msg.reply:
            await msg.respond(decision.response.encode())

    async def decide(self, request_jwt: str) -> Decision:
        """The response to one authorization request (raises :class:`natsjwt.InvalidJWT` for a
        request that is not a server's)."""
        request = natsjwt.decode_request(request_jwt)
        who = f"client {request.client_name or '?'} from {request.client_host or '?'}"

        def refuse(reason: str) -> Decision:
            response = natsjwt.response_jwt(
                user_nkey=request.user_nkey,
                server_id=request.server_id,
                issuer=self._issuer,
                error=reason,
            )
            return Decision(response, f"refused {who}: {reason}")

        if request.token is None:
            return refuse("no token: connect with a Kubernetes ServiceAccount token")
        try:
            reviewed = await asyncio.to_thread(self._reviewer.review_token, request.token)
        except Refused as refused:
            return refuse(str(refused))
        except Exception as error:
            return refuse(_api_failure("reviewing the token", error))
        identity = f"{reviewed.namespace}/{reviewed.service_account}"
        if identity == self._operator:
            perms = permissions.operator_permissions()
            granted = "operator"
        else:
            try:
                access = await asyncio.to_thread(self._reviewer.queue_access, reviewed)
            except Exception as error:
                return refuse(_api_failure("checking RBAC", error))
            try:
                perms = permissions.worker_permissions(
                    namespace=reviewed.namespace,
                    service_account=reviewed.service_account,
                    consume=access.consume,
                    publish=access.publish,
                )
            except permissions.UnusableName as error:
                return refuse(f"ServiceAccount {identity}: {error}")
            consume, publish = list(access.consume) or "none", list(access.publish) or "none"
            granted = f"consume {consume}, publish {publish}"
        user = natsjwt.user_jwt(
            user_nkey=request.user_nkey,
            name=f"system:serviceaccount:{reviewed.namespace}:{reviewed.service_account}",
            account=self._account,
            permissions=perms.claims(),
            expires=reviewed.expires,
            issuer=self._issuer,
        )
        response = natsjwt.response_jwt(
            user_nkey=request.user_nkey,
            server_id=request.server_id,
            issuer=self._issuer,
            user=user,
        )
        return Decision(response, f"admitted {who} as {identity}: {granted}")

    async def aclose(self) -> None:
        """Let the answers in flight finish (each is bounded by the API client's timeouts)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _api_failure(doing: str, error: Exception) -> str:
    """A refusal reason for a failed API call: its status only. An ``ApiException``'s text has
    the response body, and a TokenReview's body repeats the token it was asked about."""
    if isinstance(error, ApiException):
        return f"Kubernetes API error {doing}: {error.status} {error.reason}"
    return f"Kubernetes API unavailable {doing}: {type(error).__name__}"


def _secret(path: str | None, variable: str) -> str | None:
    """A secret from a file (preferred: a mounted Secret) or, failing that, the environment."""
    if path:
        return Path(path).read_text().strip()
    return os.environ.get(variable) or None


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="kadence-nats-callout", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--nats-url",
        default=env("KADENCE_NATS_URL", "nats://127.0.0.1:4222"),
        help="NATS URL(s), comma-separated (KADENCE_NATS_URL)",
    )
    parser.add_argument(
        "--user",
        default=env("KADENCE_CALLOUT_USER", "kadence-callout"),
        help="the callout's static NATS user, one of auth_users (KADENCE_CALLOUT_USER)",
    )
    parser.add_argument(
        "--password-file",
        default=env("KADENCE_CALLOUT_PASSWORD_FILE"),
        help="file holding its password (KADENCE_CALLOUT_PASSWORD_FILE; else "
        "KADENCE_CALLOUT_PASSWORD)",
    )
    parser.add_argument(
        "--issuer-seed-file",
        default=env("KADENCE_CALLOUT_ISSUER_SEED_FILE"),
        help="file holding the issuer account's nkey seed (KADENCE_CALLOUT_ISSUER_SEED_FILE; "
        "else KADENCE_CALLOUT_ISSUER_SEED)",
    )
    parser.add_argument(
        "--audience",
        default=env("KADENCE_NATS_TOKEN_AUDIENCE", DEFAULT_AUDIENCE),
        help="audience the ServiceAccount tokens must have (KADENCE_NATS_TOKEN_AUDIENCE)",
    )
    parser.add_argument(
        "--operator-service-account",
        default=env("KADENCE_OPERATOR_SERVICE_ACCOUNT", DEFAULT_OPERATOR),
        help="namespace/name of the operator's ServiceAccount (KADENCE_OPERATOR_SERVICE_ACCOUNT)",
    )
    parser.add_argument(
        "--account",
        default=env("KADENCE_CALLOUT_ACCOUNT", permissions.GLOBAL_ACCOUNT),
        help="account users are placed in (KADENCE_CALLOUT_ACCOUNT)",
    )
    parser.add_argument("--ca", default=env("KADENCE_NATS_CA"), help="CA bundle; enables TLS")
    parser.add_argument(
        "--new-issuer",
        metavar="FILE",
        help="write a fresh issuer account seed to FILE (never over an existing file), print its "
        "public key for nats-server's auth_callout.issuer, and exit",
    )
    parser.add_argument("--verbose", action="store_true")
    return parser


def new_issuer(path: Path) -> str:
    """Write a fresh account seed to ``path`` (owner-only, never over an existing file) and
    return its public key: what nats-server's ``auth_callout { issuer }`` names."""
    issuer = natsjwt.new_account_key()
    try:
        with path.open("xb") as out:  # exclusive: a second run must not replace a key in use
            path.chmod(0o600)
            out.write(bytes(issuer.seed) + b"\n")
    except FileExistsError:
        raise SystemExit(
            f"kadence-nats-callout: {path} exists; not replacing an issuer seed"
        ) from None
    return natsjwt.public_key(issuer)


async def run(args: argparse.Namespace, *, stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set (SIGTERM/SIGINT in :func:`main`)."""
    seed = _secret(args.issuer_seed_file, "KADENCE_CALLOUT_ISSUER_SEED")
    if seed is None:
        raise SystemExit("kadence-nats-callout: no issuer seed (--issuer-seed-file)")
    issuer = natsjwt.seed_key(seed.encode())
    if not natsjwt.public_key(issuer).startswith(natsjwt.ACCOUNT_KEY):
        raise SystemExit("kadence-nats-callout: the issuer seed is not an account seed")
    password = _secret(args.password_file, "KADENCE_CALLOUT_PASSWORD")
    reviewer = Reviewer(kube.api_client(), audience=args.audience)
    service = CalloutService(
        issuer=issuer,
        reviewer=reviewer,
        operator=args.operator_service_account,
        account=args.account,
    )
    stop = stop or asyncio.Event()
    nc = NATS()
    options: dict[str, Any] = {
        "servers": [u.strip() for u in args.nats_url.split(",") if u.strip()],
        "name": "kadence-nats-callout",
        "user": args.user,
        "password": password,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 1,
    }
    if args.ca:
        options["tls"] = ssl.create_default_context(cafile=args.ca)
    options.update(config.nats_event_callbacks(log, closing=lambda: nc.is_closed or nc.is_draining))
    await nc.connect(**options)
    try:
        await service.serve(nc)
        log.info(
            "answering NATS authorization requests as issuer %s (audience %s, operator %s)",
            natsjwt.public_key(issuer),
            args.audience,
            args.operator_service_account,
        )
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await nc.drain()
        await service.aclose()


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.new_issuer:
        print(new_issuer(Path(args.new_issuer)))
        return
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format=config.LOG_FORMAT,
        stream=sys.stderr,
    )

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await run(args, stop=stop)

    asyncio.run(serve())


if __name__ == "__main__":
    main()
