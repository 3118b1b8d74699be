"""The auth callout's decisions, with Kubernetes' answers stubbed (the real API server and
nats-server are in tests/integration/test_identity.py)."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

import nkeys
import pytest

from kadence_operator.identity import callout, natsjwt
from kadence_operator.identity.callout import CalloutService
from kadence_operator.identity.reviews import QueueAccess, Refused, Reviewed, Reviewer

TOKEN = "a-very-secret-service-account-token"


class StubReviewer(Reviewer):
    def __init__(self, *, who: Reviewed | None, access: QueueAccess) -> None:
        self.audience = "kadence.io/nats"
        self.who = who
        self.access = access

    def review_token(self, token: str) -> Reviewed:
        assert token == TOKEN
        if self.who is None:
            raise Refused("token rejected by Kubernetes: token has expired")
        return self.who

    def queue_access(self, who: Reviewed) -> QueueAccess:
        return self.access


def reviewed(namespace: str = "team-a", name: str = "kadence-worker") -> Reviewed:
    return Reviewed(
        namespace=namespace,
        service_account=name,
        username=f"system:serviceaccount:{namespace}:{name}",
        uid="u-1",
        groups=("system:serviceaccounts",),
        expires=2_000_000_000,
    )


def request(*, token: str | None = TOKEN) -> tuple[str, str]:
    server = natsjwt.seed_key(nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_SERVER))
    user_nkey = natsjwt.public_key(natsjwt.new_user_key())
    connect = {"protocol": 1} | ({"auth_token": token} if token else {})
    body = {
        "server_id": {"id": "NSERVER"},
        "user_nkey": user_nkey,
        "client_info": {"host": "127.0.0.1", "name": "w1"},
        "connect_opts": connect,
        "type": "authorization_request",
        "version": 2,
    }
    return natsjwt.encode({"aud": natsjwt.REQUEST_AUDIENCE, "sub": "A", "nats": body}, server), (
        user_nkey
    )


def service(reviewer: Reviewer) -> tuple[CalloutService, nkeys.KeyPair]:
    issuer = natsjwt.new_account_key()
    return CalloutService(issuer=issuer, reviewer=reviewer, operator="kadence-system/op"), issuer


def answer(response: str) -> dict[str, object]:
    claims = natsjwt.decode(response, kind="authorization_response", issuer_prefix="A")
    nats = claims["nats"]
    assert isinstance(nats, dict)
    return nats


async def test_a_worker_gets_a_user_with_its_queues(caplog: pytest.LogCaptureFixture) -> None:
    callout, issuer = service(
        StubReviewer(who=reviewed(), access=QueueAccess(consume=("reports",), publish=()))
    )
    token, user_nkey = request()
    with caplog.at_level(logging.INFO):
        decision = await callout.decide(token)
    nats = answer(decision.response)
    user = natsjwt.decode(str(nats["jwt"]), kind="user", issuer_prefix="A")
    assert user["sub"] == user_nkey
    assert user["iss"] == natsjwt.public_key(issuer)
    assert user["aud"] == "$G"
    assert user["exp"] == 2_000_000_000
    assert "$JS.ACK.KADENCE_team-a_reports.>" in user["nats"]["pub"]["allow"]
    assert user["nats"]["sub"]["allow"][0] == "_INBOX.team-a.kadence-worker.>"
    assert "team-a/kadence-worker" in decision.summary
    assert TOKEN not in decision.summary


async def test_the_operator_gets_the_operators_permissions() -> None:
    callout, _ = service(
        StubReviewer(who=reviewed("kadence-system", "op"), access=QueueAccess((), ()))
    )
    decision = await callout.decide(request()[0])
    user = natsjwt.decode(str(answer(decision.response)["jwt"]), kind="user", issuer_prefix="A")
    assert "$JS.API.>" in user["nats"]["pub"]["allow"]


async def test_a_refused_token_is_answered_with_the_reason() -> None:
    callout, _ = service(StubReviewer(who=None, access=QueueAccess((), ())))
    decision = await callout.decide(request()[0])
    assert answer(decision.response)["error"] == "token rejected by Kubernetes: token has expired"
    assert "expired" in decision.summary
    assert TOKEN not in decision.summary


async def test_no_token_is_refused() -> None:
    callout, _ = service(StubReviewer(who=reviewed(), access=QueueAccess((), ())))
    decision = await callout.decide(request(token=None)[0])
    assert "no token" in str(answer(decision.response)["error"])


async def test_an_unusable_service_account_name_is_refused() -> None:
    callout, _ = service(StubReviewer(who=reviewed(name="dotted.name"), access=QueueAccess((), ())))
    decision = await callout.decide(request()[0])
    assert "subject token" in str(answer(decision.response)["error"])


async def test_a_request_not_from_a_server_raises() -> None:
    callout, _ = service(StubReviewer(who=reviewed(), access=QueueAccess((), ())))
    with pytest.raises(natsjwt.InvalidJWT):
        await callout.decide("not.a.jwt")


class FailingReviewer(StubReviewer):
    def review_token(self, token: str) -> Reviewed:
        from kubernetes.client.exceptions import ApiException

        error = ApiException(status=503, reason="Service Unavailable")
        error.body = f'{{"spec": {{"token": "{token}"}}}}'  # what a TokenReview echoes
        raise error


async def test_an_api_failure_is_refused_without_echoing_the_response_body() -> None:
    callout, _ = service(FailingReviewer(who=reviewed(), access=QueueAccess((), ())))
    decision = await callout.decide(request()[0])
    error = str(answer(decision.response)["error"])
    assert error == "Kubernetes API error reviewing the token: 503 Service Unavailable"
    assert TOKEN not in decision.summary + error


def test_new_issuer_writes_an_owner_only_seed_and_prints_its_public_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed = tmp_path / "issuer.seed"
    callout.main(["--new-issuer", str(seed)])
    public = capsys.readouterr().out.strip()
    assert public.startswith("A")
    assert seed.stat().st_mode & 0o777 == 0o600
    assert natsjwt.public_key(natsjwt.seed_key(seed.read_bytes())) == public
    assert public not in seed.read_text()  # the file holds the seed, not what was printed
    before = seed.read_bytes()
    with pytest.raises(SystemExit, match="exists"):
        callout.main(["--new-issuer", str(seed)])
    assert seed.read_bytes() == before
