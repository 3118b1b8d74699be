"""DirectNATS parses message headers exactly as nats-py does, only with less work per name."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.aio.client import Client as NATS

from kadence.client import DirectNATS

CASES = [
    b"Nats-Msg-Id: r-1\r\nNats-Expected-Stream: KADENCE_Q\r\n\r\n",
    b"K:v\r\nK2:\tv2 \r\n",  # no space after the colon, a tab, trailing space
    b"Bad Name: x\r\nGood: y\r\n",  # whitespace in a name: skipped
    b"Tab\tName: x\r\n\x1cSep: y\r\n",  # isspace() whitespace that is not a plain space
    b"no colon line\r\nA: 1\r\n",
    b"A: 1\r\nA: 2\r\n",  # the last wins
    b"\xc3\xa9: accent in name\r\nV: caf\xc3\xa9\r\nW: \xff\xfe\r\n",  # non-ASCII name, bad UTF-8
    b": empty name\r\n  : spaces only\r\n",
    b"",
]


@pytest.mark.parametrize("raw", CASES)
def test_the_same_headers_as_nats_py(raw: bytes) -> None:
    assert DirectNATS._parse_header_lines(raw) == NATS._parse_header_lines(raw)


@given(st.binary(max_size=200))
def test_the_same_headers_as_nats_py_for_any_bytes(raw: bytes) -> None:
    assert DirectNATS._parse_header_lines(raw) == NATS._parse_header_lines(raw)


@given(
    st.lists(
        st.tuples(
            st.text(max_size=12),
            st.sampled_from([":", ": ", ":\t", ""]),
            st.text(max_size=12),
        ),
        max_size=6,
    )
)
def test_the_same_headers_as_nats_py_for_header_like_lines(
    lines: list[tuple[str, str, str]],
) -> None:
    raw = b"".join(f"{k}{sep}{v}\r\n".encode() for k, sep, v in lines)
    assert DirectNATS._parse_header_lines(raw) == NATS._parse_header_lines(raw)
