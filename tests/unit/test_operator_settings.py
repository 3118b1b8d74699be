"""Operator settings from the environment: defaults, parsing, and errors that name the variable."""

from __future__ import annotations

import getpass
import os
import pwd
import socket
from typing import NoReturn

import pytest

from kadence_operator.settings import OperatorSettings, SettingsError


def test_defaults() -> None:
    s = OperatorSettings.from_env({})
    assert (s.shards, s.lease_duration, s.lease_renew, s.lease_retry) == (32, 15.0, 10.0, 2.0)
    assert (s.status_interval, s.dispatch_quiet, s.dispatch_burst) == (5.0, 0.2, 100)
    assert s.dispatch_stage == 16
    assert s.nats_token_audience is None  # shared NATS credentials


def test_values_are_read_from_kadence_variables_and_empty_ones_ignored() -> None:
    s = OperatorSettings.from_env(
        {
            "KADENCE_SHARDS": "8",
            "KADENCE_DISPATCH_QUIET": "0",
            "KADENCE_DISPATCH_BURST": "25",
            "KADENCE_DISPATCH_STAGE": "0",
            "KADENCE_STATUS_INTERVAL": "",
            "KADENCE_NATS_TOKEN_AUDIENCE": "kadence.io/nats",
            "SHARDS": "99",
        }
    )
    assert s.nats_token_audience == "kadence.io/nats"
    assert (s.shards, s.dispatch_quiet, s.dispatch_burst, s.status_interval) == (8, 0.0, 25, 5.0)
    assert s.dispatch_stage == 0


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KADENCE_DISPATCH_QUIET": "5"}, "KADENCE_DISPATCH_QUIET: Input should be less than or"),
        ({"KADENCE_DISPATCH_QUIET": "-1"}, "KADENCE_DISPATCH_QUIET: Input should be greater than"),
        ({"KADENCE_DISPATCH_BURST": "0"}, "KADENCE_DISPATCH_BURST: Input should be greater than"),
        ({"KADENCE_DISPATCH_STAGE": "-1"}, "KADENCE_DISPATCH_STAGE: Input should be greater"),
        ({"KADENCE_SHARDS": "many"}, "KADENCE_SHARDS: Input should be a valid integer"),
        ({"KADENCE_LEASE_RENEW": "20"}, "KADENCE_LEASE_RENEW (20.0) must be shorter than"),
        ({"KADENCE_RESULTS_ACK_WAIT": "2"}, "KADENCE_RESULTS_ACK_WAIT: Input should be greater"),
        ({"KADENCE_DUPLICATE_WINDOW": "10"}, "KADENCE_DUPLICATE_WINDOW (10.0) must be at least"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as error:
        OperatorSettings.from_env(env)
    assert message in str(error.value)


def _no_user_database(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every way of asking who the user is fail as it does for a uid without a passwd entry."""

    def missing(*_: object) -> NoReturn:
        raise KeyError("getpwuid(): uid not found: 65532")

    monkeypatch.setattr(pwd, "getpwuid", missing)
    monkeypatch.setattr(pwd, "getpwnam", missing)
    monkeypatch.setattr(getpass, "getuser", missing)
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.delenv(name, raising=False)


def test_kopf_identity_is_the_operator_id(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_user_database(monkeypatch)
    settings = OperatorSettings.from_env({"KADENCE_OPERATOR_ID": "kadence-operator-7d9f-x2"})
    assert settings.kopf_identity() == "kadence-operator-7d9f-x2"


def test_kopf_identity_without_an_operator_id_is_host_and_pid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _no_user_database(monkeypatch)
    settings = OperatorSettings.from_env({"KADENCE_OPERATOR_ID": ""})
    host = socket.gethostname()
    assert settings.operator_id == host  # Lease holders keep the host name
    assert settings.kopf_identity() == f"{host}-{os.getpid()}"
