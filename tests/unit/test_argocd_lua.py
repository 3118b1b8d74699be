"""Argo CD health checks and resource actions for Jobs and Queues, run as Argo CD runs them.

Argo CD runs these scripts in gopher-lua (Lua 5.1) with only the base, table and package
libraries plus a "safe" os module holding ``time`` and ``date`` (reachable through
``require("os")``); the object is the global ``obj``. The sandbox here is Lua 5.1 (lupa) with the
same libraries removed, and strings without methods, so a script that would fail in Argo CD fails
here too.
"""

from __future__ import annotations

import calendar
import copy
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

lupa = pytest.importorskip("lupa.lua51", reason="lupa is in the dev extra: pip install -e .[dev]")

REPO = Path(__file__).resolve().parents[2]
ARGOCD = REPO / "argocd"
LUA = ARGOCD / "resource_customizations" / "kadence.io"
JOB_HEALTH = LUA / "Job" / "health.lua"
QUEUE_HEALTH = LUA / "Queue" / "health.lua"
DISCOVERY = LUA / "Job" / "actions" / "discovery.lua"
ACTIONS = {
    name: LUA / "Job" / "actions" / name / "action.lua" for name in ("trigger", "suspend", "resume")
}
ARGO_HEALTH = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}

FIXED_NOW = calendar.timegm((2026, 1, 2, 3, 4, 5, 0, 0, 0))
FIXED_STAMP = "2026-01-02T03:04:05Z"

_SANDBOX = """
local real_time, real_date = os.time, os.date
local fixed = ...
local safe_os = {}
if fixed ~= nil then
  safe_os.time = function(t) if t == nil then return fixed end return real_time(t) end
  safe_os.date = function(f, t) return real_date(f, t or fixed) end
else
  safe_os.time = real_time
  safe_os.date = real_date
end
package.loaded.os = safe_os
package.preload.os = function() return safe_os end
getmetatable("").__index = nil
os, string, math, io, debug, coroutine = nil, nil, nil, nil, nil, nil
load, loadstring, loadfile, dofile = nil, nil, nil, nil
"""


def to_lua(runtime: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return runtime.table_from({k: to_lua(runtime, v) for k, v in value.items()})
    if isinstance(value, list):
        return runtime.table_from([to_lua(runtime, v) for v in value])
    return value


def from_lua(value: Any) -> Any:
    if lupa.lua_type(value) != "table":
        return value
    items = dict(value.items())
    if (
        items
        and all(isinstance(k, int) for k in items)
        and sorted(items) == list(range(1, len(items) + 1))
    ):
        return [from_lua(items[i]) for i in range(1, len(items) + 1)]
    return {k: from_lua(v) for k, v in items.items()}


def run_lua(path: Path, obj: dict[str, Any], *, now: int | None = FIXED_NOW) -> Any:
    """Run ``path`` with the global ``obj`` in a fresh sandbox; returns the script's value."""
    runtime = lupa.LuaRuntime(unpack_returned_tuples=False, register_eval=False)
    runtime.execute(_SANDBOX, now)
    runtime.globals().obj = to_lua(runtime, copy.deepcopy(obj))
    return from_lua(runtime.execute(path.read_text()))


def job(**changes: Any) -> dict[str, Any]:
    """The interval example Job from examples/, with metadata a server would add."""
    body: dict[str, Any] = yaml.safe_load((REPO / "examples" / "job-interval.yaml").read_text())
    body["metadata"].update(
        {"namespace": "demo", "generation": 2, "uid": "0b6f4d8e-1111-2222-3333-444455556666"}
    )
    body.update(changes)
    return body


def queue(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load((REPO / "examples" / "queue.yaml").read_text())
    body["metadata"].update({"namespace": "demo", "generation": 3})
    body.update(changes)
    return body


def cond(kind: str, status: str, reason: str = "", message: str = "") -> dict[str, Any]:
    item = {"type": kind, "status": status, "lastTransitionTime": "2026-01-01T00:00:00Z"}
    if reason:
        item["reason"] = reason
    if message:
        item["message"] = message
    return item


def suspended_job() -> dict[str, Any]:
    body = job(status={"observedGeneration": 2, "conditions": [cond("Ready", "False", "X", "bad")]})
    body["spec"]["suspend"] = True
    return body


# --------------------------------------------------------------------------------------------
# health
# --------------------------------------------------------------------------------------------

JOB_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("suspended wins over Degraded", suspended_job(), "Suspended", "Job is suspended"),
    ("no status", job(), "Progressing", "Waiting for the operator to reconcile the Job"),
    ("empty status", job(status={}), "Progressing", "reconcile"),
    (
        "status behind the spec",
        job(status={"observedGeneration": 1, "conditions": [cond("Ready", "True")]}),
        "Progressing",
        "latest spec",
    ),
    (
        "Ready False with a message",
        job(
            status={
                "observedGeneration": 2,
                "conditions": [
                    cond("Ready", "False", "QueueNotFound", 'queue "reports" not found')
                ],
            }
        ),
        "Degraded",
        'queue "reports" not found',
    ),
    (
        "Ready False with only a reason",
        job(
            status={"observedGeneration": 2, "conditions": [cond("Ready", "False", "InvalidSpec")]}
        ),
        "Degraded",
        "InvalidSpec",
    ),
    (
        "last run failed",
        job(
            status={
                "observedGeneration": 2,
                "conditions": [
                    cond("Ready", "True", "Scheduled"),
                    cond("LastRunSucceeded", "False", "Failed", "run r-1 failed: ValueError: boom"),
                ],
                "lastResult": "Failed",
            }
        ),
        "Degraded",
        "run r-1 failed: ValueError: boom",
    ),
    (
        "ready with a next run",
        job(
            status={
                "observedGeneration": 2,
                "conditions": [cond("Ready", "True"), cond("LastRunSucceeded", "True")],
                "nextRunTime": "2026-01-02T03:05:00Z",
                "lastResult": "Succeeded",
            }
        ),
        "Healthy",
        "Next run at 2026-01-02T03:05:00Z",
    ),
    (
        "one-shot done",
        job(
            status={
                "observedGeneration": 2,
                "conditions": [cond("Ready", "True"), cond("LastRunSucceeded", "True")],
                "lastResult": "Succeeded",
            }
        ),
        "Healthy",
        "Last run Succeeded",
    ),
    (
        "ready, nothing run yet",
        job(status={"observedGeneration": 2, "conditions": [cond("Ready", "True", "Scheduled")]}),
        "Healthy",
        "Scheduled",
    ),
    (
        "Ready Unknown",
        job(status={"observedGeneration": 2, "conditions": [cond("Ready", "Unknown", "Checking")]}),
        "Progressing",
        "Checking",
    ),
    (
        "no Ready condition yet",
        job(status={"observedGeneration": 2, "conditions": []}),
        "Progressing",
        "Waiting for the Job to become ready",
    ),
]

QUEUE_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("no status", queue(), "Progressing", "Waiting for the operator to create the stream"),
    (
        "Ready True",
        queue(
            status={
                "observedGeneration": 3,
                "conditions": [cond("Ready", "True", "StreamReady", "stream KADENCE_demo_reports")],
            }
        ),
        "Healthy",
        "stream KADENCE_demo_reports",
    ),
    (
        "Ready True, reason only",
        queue(
            status={"observedGeneration": 3, "conditions": [cond("Ready", "True", "StreamReady")]}
        ),
        "Healthy",
        "StreamReady",
    ),
    (
        "Ready False",
        queue(
            status={
                "observedGeneration": 3,
                "conditions": [cond("Ready", "False", "NatsUnavailable", "no responders")],
            }
        ),
        "Degraded",
        "no responders",
    ),
    (
        "Ready True but behind the spec",
        queue(status={"observedGeneration": 2, "conditions": [cond("Ready", "True")]}),
        "Progressing",
        "latest spec",
    ),
    (
        "Ready Unknown",
        queue(status={"observedGeneration": 3, "conditions": [cond("Ready", "Unknown")]}),
        "Progressing",
        "Waiting for the Queue to become ready",
    ),
    ("status without conditions", queue(status={}), "Progressing", "create the stream"),
]


@pytest.mark.parametrize(
    ("obj", "status", "message"),
    [pytest.param(o, s, m, id=name) for name, o, s, m in JOB_CASES],
)
def test_job_health(obj: dict[str, Any], status: str, message: str) -> None:
    health = run_lua(JOB_HEALTH, obj)
    assert health["status"] == status
    assert health["status"] in ARGO_HEALTH
    assert message in health["message"]


@pytest.mark.parametrize(
    ("obj", "status", "message"),
    [pytest.param(o, s, m, id=name) for name, o, s, m in QUEUE_CASES],
)
def test_queue_health(obj: dict[str, Any], status: str, message: str) -> None:
    health = run_lua(QUEUE_HEALTH, obj)
    assert health == {"status": status, "message": health["message"]}
    assert message in health["message"]


# --------------------------------------------------------------------------------------------
# actions
# --------------------------------------------------------------------------------------------


def running_job() -> dict[str, Any]:
    return job(status={"observedGeneration": 2, "conditions": [cond("Ready", "True")]})


@pytest.mark.parametrize(
    ("suspend", "enabled"),
    [
        (None, {"trigger", "suspend"}),
        (False, {"trigger", "suspend"}),
        (True, {"trigger", "resume"}),
    ],
)
def test_discovery(suspend: bool | None, enabled: set[str]) -> None:
    obj = running_job()
    if suspend is None:
        obj["spec"].pop("suspend", None)
    else:
        obj["spec"]["suspend"] = suspend
    actions = run_lua(DISCOVERY, obj)
    assert set(actions) == {"trigger", "suspend", "resume"}
    assert {name for name, action in actions.items() if not action["disabled"]} == enabled
    for action in actions.values():
        assert set(action) == {"disabled", "iconClass", "displayName"}


def test_suspend_and_resume_change_only_spec_suspend() -> None:
    original = running_job()
    suspended = run_lua(ACTIONS["suspend"], original)
    expected = copy.deepcopy(original)
    expected["spec"]["suspend"] = True
    assert suspended == expected
    resumed = run_lua(ACTIONS["resume"], suspended)
    expected["spec"]["suspend"] = False
    assert resumed == expected
    # Resuming an already running Job is harmless.
    assert run_lua(ACTIONS["resume"], original)["spec"]["suspend"] is False


def test_trigger_sets_a_new_annotation_and_nothing_else() -> None:
    original = running_job()
    original["metadata"].pop("annotations", None)
    triggered = run_lua(ACTIONS["trigger"], original)
    expected = copy.deepcopy(original)
    expected["metadata"]["annotations"] = {"kadence.io/trigger": FIXED_STAMP}
    assert triggered == expected


@pytest.mark.parametrize(
    ("annotation", "last_trigger", "expected"),
    [
        ("1767225600", "1767225600", FIXED_STAMP),
        (FIXED_STAMP, FIXED_STAMP, FIXED_STAMP + ".2"),
        (FIXED_STAMP, None, FIXED_STAMP + ".2"),
        (FIXED_STAMP + ".2", FIXED_STAMP, FIXED_STAMP + ".3"),
        (FIXED_STAMP + ".2", FIXED_STAMP + ".2", FIXED_STAMP),
    ],
)
def test_trigger_value_is_always_new(
    annotation: str, last_trigger: str | None, expected: str
) -> None:
    obj = running_job()
    obj["metadata"]["annotations"] = {"kadence.io/trigger": annotation, "team": "data"}
    if last_trigger is not None:
        obj["status"]["lastTrigger"] = last_trigger
    triggered = run_lua(ACTIONS["trigger"], obj)
    assert triggered["metadata"]["annotations"] == {"kadence.io/trigger": expected, "team": "data"}
    assert expected not in (annotation, last_trigger)


def test_trigger_uses_the_real_clock() -> None:
    triggered = run_lua(ACTIONS["trigger"], running_job(), now=None)
    value = triggered["metadata"]["annotations"]["kadence.io/trigger"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", value), value


# --------------------------------------------------------------------------------------------
# the argocd-cm snippet carries exactly these files
# --------------------------------------------------------------------------------------------


def test_scripts_use_only_what_argo_cd_provides() -> None:
    for path in [JOB_HEALTH, QUEUE_HEALTH, DISCOVERY, *ACTIONS.values()]:
        text = path.read_text()
        code = "\n".join(line.split("--", 1)[0] for line in text.splitlines())
        for library in ("string", "math", "io", "debug", "coroutine"):
            assert not re.search(rf"\b{library}\s*[.:\[]", code), f"{path} uses {library}"
        assert not re.search(r"[\w\])]:\w+\(", code), f"{path} calls a method (no string lib)"
        assert "\t" not in text
        assert all(line == line.rstrip() for line in text.splitlines()), f"{path}: trailing space"


def test_configmap_snippet_is_generated_from_the_files() -> None:
    check = subprocess.run(
        [sys.executable, ARGOCD / "generate.py", "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    configmap = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())
    assert configmap["kind"] == "ConfigMap"
    assert configmap["metadata"]["name"] == "argocd-cm"
    data = configmap["data"]
    assert set(data) == {
        "resource.customizations.health.kadence.io_Job",
        "resource.customizations.health.kadence.io_Queue",
        "resource.customizations.actions.kadence.io_Job",
    }
    assert data["resource.customizations.health.kadence.io_Job"] == JOB_HEALTH.read_text()
    assert data["resource.customizations.health.kadence.io_Queue"] == QUEUE_HEALTH.read_text()
    actions = yaml.safe_load(data["resource.customizations.actions.kadence.io_Job"])
    assert actions["discovery.lua"] == DISCOVERY.read_text()
    assert {d["name"]: d["action.lua"] for d in actions["definitions"]} == {
        name: path.read_text() for name, path in ACTIONS.items()
    }
    helm_values = yaml.safe_load((ARGOCD / "argo-cd-values.yaml").read_text())
    assert helm_values["configs"]["cm"] == data


def test_example_application_points_at_the_chart() -> None:
    apps = [a for a in yaml.safe_load_all((ARGOCD / "application.yaml").read_text()) if a]
    kadence = next(a for a in apps if a["metadata"]["name"] == "kadence")
    assert kadence["apiVersion"] == "argoproj.io/v1alpha1"
    assert kadence["kind"] == "Application"
    source = kadence["spec"]["source"]
    assert (REPO / source["path"] / "Chart.yaml").is_file()
    assert "ServerSideApply=true" in kadence["spec"]["syncPolicy"]["syncOptions"]
    # Deleting the Application must not cascade to the CRDs (and so to every Job and Queue).
    assert "resources-finalizer.argocd.argoproj.io" not in kadence["metadata"].get("finalizers", [])
    values = source["helm"]["valuesObject"]
    assert values["nats"]["url"].startswith("nats://")
