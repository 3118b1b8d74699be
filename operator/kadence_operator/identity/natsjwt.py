"""NATS JWTs: the auth callout's request from nats-server, its response, and the user it admits.

A NATS JWT is ``base64url(header).base64url(claims).base64url(signature)`` without padding, the
header ``{"typ":"JWT","alg":"ed25519-nkey"}`` and the signature ed25519 over the first two parts
by the issuer's nkey (the ``iss`` claim is that key's public form). The claim layouts follow
github.com/nats-io/jwt v2 (``authorization_claims.go``, ``user_claims.go``, ``claims.go``): the
common claims ``aud``, ``exp``, ``jti``, ``iat``, ``iss``, ``name``, ``sub`` at the top, the
type's own fields under ``nats`` with ``type`` and ``version: 2``.

What nats-server checks of a response (``server/auth_callout.go``, config mode): it decodes as an
``authorization_response`` signed by an account key, its ``sub`` is the ``user_nkey`` of the
request and its ``aud`` the server's id; then the embedded ``user`` JWT has the same ``sub``, the
configured issuer as ``iss``, and as ``aud`` the account the user is placed in.

No I/O: keys come in as :class:`nkeys.KeyPair` objects; nothing here logs, and a seed never
leaves the key pair.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import nacl.exceptions
import nacl.signing
import nkeys

HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
_ALGORITHMS = {"ed25519-nkey", "ed25519"}  # the second: v1 JWTs, still decoded by nats-io/jwt
VERSION = 2

AUTHORIZATION_REQUEST = "authorization_request"
AUTHORIZATION_RESPONSE = "authorization_response"
USER = "user"

#: The ``aud`` of every authorization request (nats-server's ``AuthRequestSubject``).
REQUEST_AUDIENCE = "nats-authorization-request"

#: Public key prefixes (their first letter): server, account, user.
SERVER_KEY = "N"
ACCOUNT_KEY = "A"
USER_KEY = "U"


class InvalidJWT(ValueError):
    """Not a well-formed, correctly signed NATS JWT of the expected kind."""


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as error:
        raise InvalidJWT(f"bad base64url: {error}") from None


def new_account_key() -> nkeys.KeyPair:
    """A fresh account key pair (the callout's issuer: ``kadence-nats-callout --new-issuer``)."""
    return seed_key(nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_ACCOUNT))


def new_user_key() -> nkeys.KeyPair:
    return seed_key(nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER))


def seed_key(seed: bytes) -> nkeys.KeyPair:
    """The key pair of an nkey seed (``SA…`` for an account)."""
    try:
        return nkeys.from_seed(bytearray(seed.strip()))
    except nkeys.NkeysError as error:
        raise ValueError(f"not an nkey seed: {type(error).__name__}") from None


def public_key(pair: nkeys.KeyPair) -> str:
    return bytes(pair.public_key).decode()


def verify_key(public: str) -> nacl.signing.VerifyKey:
    """The ed25519 key of a public nkey (``N…``, ``A…``, ``U…``), its CRC checked.

    The ``nkeys`` package verifies only with a full key pair; a request's issuer is known by
    its public key alone.
    """
    try:
        raw = base64.b32decode(public + "=" * (-len(public) % 8))
    except (binascii.Error, ValueError):
        raise InvalidJWT("issuer is not an nkey") from None
    if len(raw) != 35:
        raise InvalidJWT("issuer is not a public nkey")
    body, crc = raw[:-2], int.from_bytes(raw[-2:], "little")
    if nkeys.crc16(bytearray(body)) != crc:
        raise InvalidJWT("issuer nkey has a bad checksum")
    return nacl.signing.VerifyKey(body[1:])


def encode(claims: Mapping[str, Any], signer: nkeys.KeyPair) -> str:
    """Sign ``claims`` with ``signer``: ``iss``, ``iat`` and a ``jti`` are set here."""
    body = dict(claims)
    body["iss"] = public_key(signer)
    body["iat"] = int(time.time())
    body["jti"] = secrets.token_hex(16).upper()
    signing_input = ".".join(
        _b64encode(json.dumps(part, separators=(",", ":")).encode()) for part in (HEADER, body)
    )
    signature = signer.sign(signing_input.encode())
    return f"{signing_input}.{_b64encode(bytes(signature))}"


def decode(token: str, *, kind: str, issuer_prefix: str) -> dict[str, Any]:
    """The claims of ``token`` after checking its header, signature, type and issuer kind.

    Raises :class:`InvalidJWT`; ``exp`` in the past is refused too.
    """
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise InvalidJWT("not a JWT")
    try:
        header = json.loads(_b64decode(parts[0]))
        claims = json.loads(_b64decode(parts[1]))
    except ValueError:
        raise InvalidJWT("JWT parts are not JSON") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise InvalidJWT("JWT parts are not objects")
    if str(header.get("typ", "")).upper() != "JWT" or header.get("alg") not in _ALGORITHMS:
        raise InvalidJWT("not a NATS JWT")
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or not issuer.startswith(issuer_prefix):
        raise InvalidJWT(f"issuer is not a {issuer_prefix}… key")
    try:
        verify_key(issuer).verify(f"{parts[0]}.{parts[1]}".encode(), _b64decode(parts[2]))
    except nacl.exceptions.BadSignatureError:
        raise InvalidJWT("bad signature") from None
    nats = claims.get("nats")
    if not isinstance(nats, dict) or nats.get("type") != kind:
        raise InvalidJWT(f"not an {kind} JWT")
    expires = claims.get("exp")
    if isinstance(expires, int) and expires and expires < time.time():
        raise InvalidJWT("expired")
    return claims


@dataclass(frozen=True)
class AuthorizationRequest:
    """What the callout needs of nats-server's ``authorization_request``. ``token`` is the
    client's CONNECT ``auth_token``: a secret, never logged (``repr`` leaves it out)."""

    server_id: str
    user_nkey: str
    client_name: str
    client_host: str
    token: str | None

    def __repr__(self) -> str:
        return (
            f"AuthorizationRequest(server_id={self.server_id!r}, user_nkey={self.user_nkey!r}, "
            f"client_name={self.client_name!r}, client_host={self.client_host!r})"
        )


def decode_request(token: str) -> AuthorizationRequest:
    """A server's authorization request: signed by a server key (``N…``), for the callout."""
    claims = decode(token, kind=AUTHORIZATION_REQUEST, issuer_prefix=SERVER_KEY)
    if claims.get("aud") != REQUEST_AUDIENCE:
        raise InvalidJWT("not addressed to an auth callout")
    nats = claims["nats"]
    server = nats.get("server_id") or {}
    client = nats.get("client_info") or {}
    connect = nats.get("connect_opts") or {}
    user_nkey = nats.get("user_nkey")
    server_id = server.get("id")
    if not isinstance(user_nkey, str) or not user_nkey.startswith(USER_KEY):
        raise InvalidJWT("request has no user nkey")
    if not isinstance(server_id, str) or not server_id:
        raise InvalidJWT("request has no server id")
    auth_token = connect.get("auth_token")
    return AuthorizationRequest(
        server_id=server_id,
        user_nkey=user_nkey,
        client_name=str(client.get("name") or ""),
        client_host=str(client.get("host") or ""),
        token=auth_token if isinstance(auth_token, str) and auth_token else None,
    )


def user_jwt(
    *,
    user_nkey: str,
    name: str,
    account: str,
    permissions: Mapping[str, Any],
    expires: int | None,
    issuer: nkeys.KeyPair,
) -> str:
    """The user nats-server admits: ``sub`` the request's user nkey, ``aud`` the account it
    goes to, the ``pub``/``sub`` allow lists; nats-server disconnects it at ``exp``."""
    claims: dict[str, Any] = {
        "aud": account,
        "name": name,
        "sub": user_nkey,
        # No limits, as nats-io/jwt's NewUserClaims sets them (-1); in config mode nats-server
        # applies only the permissions of a callout's user anyway (buildInternalNkeyUser).
        "nats": {
            **permissions,
            "subs": -1,
            "data": -1,
            "payload": -1,
            "type": USER,
            "version": VERSION,
        },
    }
    if expires is not None:
        claims["exp"] = expires
    return encode(claims, issuer)


def response_jwt(
    *,
    user_nkey: str,
    server_id: str,
    issuer: nkeys.KeyPair,
    user: str | None = None,
    error: str | None = None,
) -> str:
    """The ``authorization_response``: the signed user JWT, or the reason for refusing."""
    if (user is None) == (error is None):
        raise ValueError("a response carries either a user JWT or an error")
    nats: dict[str, Any] = {"type": AUTHORIZATION_RESPONSE, "version": VERSION}
    if user is not None:
        nats["jwt"] = user
    else:
        nats["error"] = error
    return encode({"aud": server_id, "sub": user_nkey, "nats": nats}, issuer)
