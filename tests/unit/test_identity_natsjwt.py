"""NATS JWTs of the auth callout: round trips, signatures, and the claim layout nats-server
reads (nats-io/jwt v2). A real nats-server accepting them is tests/integration/test_identity.py."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import nkeys
import pytest

from kadence_operator.identity import natsjwt


def server_key() -> nkeys.KeyPair:
    import secrets

    return natsjwt.seed_key(nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_SERVER))


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, claims, _ = token.split(".")

    def pad(part: str) -> str:
        return part + "=" * (-len(part) % 4)

    return (
        json.loads(base64.urlsafe_b64decode(pad(header))),
        json.loads(base64.urlsafe_b64decode(pad(claims))),
    )


def request(signer: nkeys.KeyPair, **nats: Any) -> str:
    body = {
        "server_id": {"id": "NSERVERID", "name": "n0"},
        "user_nkey": natsjwt.public_key(natsjwt.new_user_key()),
        "client_info": {"host": "127.0.0.1", "name": "kadence worker-1"},
        "connect_opts": {"auth_token": "the-token", "protocol": 1},
        "type": natsjwt.AUTHORIZATION_REQUEST,
        "version": 2,
    } | nats
    return natsjwt.encode(
        {"aud": natsjwt.REQUEST_AUDIENCE, "sub": "ACALLOUT", "nats": body}, signer
    )


def test_a_servers_request_is_decoded_and_its_token_not_shown() -> None:
    decoded = natsjwt.decode_request(request(server_key()))
    assert decoded.server_id == "NSERVERID"
    assert decoded.user_nkey.startswith("U")
    assert decoded.token == "the-token"
    assert decoded.client_name == "kadence worker-1"
    assert "the-token" not in repr(decoded)


def test_the_header_and_encoding_are_nats_jwts() -> None:
    token = request(server_key())
    assert "=" not in token
    header, claims = parts(token)
    assert header == {"typ": "JWT", "alg": "ed25519-nkey"}
    assert claims["iss"].startswith("N")
    assert isinstance(claims["iat"], int)
    assert claims["jti"]


def test_a_request_not_signed_by_a_server_key_is_refused() -> None:
    with pytest.raises(natsjwt.InvalidJWT, match="issuer"):
        natsjwt.decode_request(request(natsjwt.new_account_key()))


def test_a_tampered_request_is_refused() -> None:
    header, claims, signature = request(server_key()).split(".")
    _, body = parts(f"{header}.{claims}.{signature}")
    body["nats"]["connect_opts"]["auth_token"] = "another"
    forged = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    with pytest.raises(natsjwt.InvalidJWT, match="signature"):
        natsjwt.decode_request(f"{header}.{forged}.{signature}")


def test_an_expired_request_is_refused() -> None:
    signer = server_key()
    token = natsjwt.encode(
        {
            "aud": natsjwt.REQUEST_AUDIENCE,
            "exp": int(time.time()) - 10,
            "sub": "A",
            "nats": {"type": natsjwt.AUTHORIZATION_REQUEST},
        },
        signer,
    )
    with pytest.raises(natsjwt.InvalidJWT, match="expired"):
        natsjwt.decode_request(token)


@pytest.mark.parametrize("token", ["", "a.b", "x.y.z", "e30.e30.e30"])
def test_garbage_is_refused(token: str) -> None:
    with pytest.raises(natsjwt.InvalidJWT):
        natsjwt.decode_request(token)


def test_response_with_a_user_as_nats_server_reads_it() -> None:
    issuer = natsjwt.new_account_key()
    user_nkey = natsjwt.public_key(natsjwt.new_user_key())
    user = natsjwt.user_jwt(
        user_nkey=user_nkey,
        name="system:serviceaccount:team-a:w",
        account="$G",
        permissions={"pub": {"allow": ["a"]}, "sub": {"allow": ["b"]}},
        expires=int(time.time()) + 600,
        issuer=issuer,
    )
    response = natsjwt.response_jwt(
        user_nkey=user_nkey, server_id="NSERVERID", issuer=issuer, user=user
    )
    claims = natsjwt.decode(
        response, kind=natsjwt.AUTHORIZATION_RESPONSE, issuer_prefix=natsjwt.ACCOUNT_KEY
    )
    assert claims["sub"] == user_nkey
    assert claims["aud"] == "NSERVERID"
    assert claims["iss"] == natsjwt.public_key(issuer)
    assert "error" not in claims["nats"]
    inner = natsjwt.decode(claims["nats"]["jwt"], kind=natsjwt.USER, issuer_prefix="A")
    assert inner["aud"] == "$G"
    assert inner["sub"] == user_nkey
    assert inner["nats"]["pub"] == {"allow": ["a"]}
    assert inner["nats"]["version"] == 2


def test_response_with_an_error() -> None:
    issuer = natsjwt.new_account_key()
    response = natsjwt.response_jwt(
        user_nkey="UABC", server_id="NSERVERID", issuer=issuer, error="token expired"
    )
    _, claims = parts(response)
    assert claims["nats"] == {
        "type": "authorization_response",
        "version": 2,
        "error": "token expired",
    }
    with pytest.raises(ValueError, match="either"):
        natsjwt.response_jwt(user_nkey="U", server_id="N", issuer=issuer)


def test_a_seed_file_round_trips_and_a_bad_seed_says_so_without_echoing_it() -> None:
    pair = natsjwt.new_account_key()
    again = natsjwt.seed_key(bytes(pair.seed) + b"\n")
    assert natsjwt.public_key(again) == natsjwt.public_key(pair)
    with pytest.raises(ValueError, match="not an nkey seed") as raised:
        natsjwt.seed_key(b"SAnotaseed")
    assert "SAnotaseed" not in str(raised.value)
