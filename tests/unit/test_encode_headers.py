"""kadence.requests.encode_headers: NATS headers encoded as nats-py's publish encodes them."""

from __future__ import annotations

import nats.errors
import pytest

from kadence.requests import encode_headers


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, b"NATS/1.0\r\n\r\n"),
        ({"Nats-Msg-Id": "s-1"}, b"NATS/1.0\r\nNats-Msg-Id: s-1\r\n\r\n"),
        # names and values are trimmed; CR and LF in a value become spaces; order is kept
        (
            {" A ": " x\r\ny ", "B": "2"},
            b"NATS/1.0\r\nA: x  y\r\nB: 2\r\n\r\n",
        ),
        # an empty name is skipped, as nats-py skips it
        ({" ": "ignored", "C": "3"}, b"NATS/1.0\r\nC: 3\r\n\r\n"),
        # values are UTF-8
        ({"Note": "día"}, "NATS/1.0\r\nNote: día\r\n\r\n".encode()),
    ],
)
def test_encode_headers_table(headers: dict[str, str], expected: bytes) -> None:
    assert encode_headers(headers) == expected


@pytest.mark.parametrize("name", ["a b", "x:y", "naïve", "tab\there"])
def test_a_name_that_is_not_a_token_is_refused(name: str) -> None:
    with pytest.raises(nats.errors.BadHeaderError):
        encode_headers({name: "v"})
