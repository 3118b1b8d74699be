"""``make demo-kind``: the prerequisite check run for real, and tables of the pure helpers.

The kind flow itself needs a Docker engine and network access for the base images; it is not run
here (``make demo-kind`` and ``make e2e`` run it). Nothing below fakes a subprocess: the CLI is
started for real, where Docker is absent, and must stop at once with one line and exit code 2.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import itertools
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from kadence_devstack import binaries, demo, demo_kind, kind
from kadence_devstack.procs import SetupError

DEVSTACK = Path(sys.executable).parent / "kadence-devstack"


def _demo_kind(cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DEVSTACK), "demo-kind"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]


# --- the prerequisite check, for real ------------------------------------------------------------


def test_nothing_on_path_names_docker_kind_and_helm_in_one_line(tmp_path: Path) -> None:
    """An empty PATH and an empty cache: no docker, no kind, no helm and no Go to build them."""
    env = {
        "PATH": str(tmp_path / "empty-bin"),
        "HOME": str(tmp_path),
        "KADENCE_CACHE_DIR": str(tmp_path / "empty-cache"),
        "COLUMNS": "60",  # a narrow terminal must not wrap the line
    }
    result = _demo_kind(tmp_path, env)
    assert result.returncode == 2, result
    lines = _error_lines(result)
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith("error: missing for a kind cluster: ")
    assert "Docker: no `docker` client on PATH" in line
    assert "https://docs.docker.com/engine/install/" in line
    assert "kind: not on PATH and no Go to install it" in line
    assert "https://kind.sigs.k8s.io/" in line
    assert f"kind {binaries.KIND_VERSION}" in line
    assert "helm: not on PATH and no Go to install it" in line
    assert "kubectl" not in line  # the virtualenv has it
    assert not (tmp_path / ".devstack-kind").exists(), "nothing is created before the check"


def test_this_machine_without_a_docker_engine_fails_fast(tmp_path: Path) -> None:
    """The environment as it is (on the development machine: a docker client, no engine)."""
    reason = kind.docker_unavailable_reason()
    if reason is None:
        pytest.skip("a Docker engine answers here: demo-kind would create a real cluster")
    result = _demo_kind(tmp_path, dict(os.environ))
    assert result.returncode == 2, result
    lines = _error_lines(result)
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: missing for a kind cluster: Docker: ")
    assert " ".join(reason.split()) in lines[0]
    assert not (tmp_path / ".devstack-kind").exists()


def test_missing_prerequisites_put_docker_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("KADENCE_CACHE_DIR", str(tmp_path / "cache"))
    problems = kind.missing_prerequisites()
    assert [p.split(":")[0] for p in problems] == ["Docker", "kind", "helm"]
    with pytest.raises(SetupError) as info:
        kind.check_prerequisites()
    assert "\n" not in str(info.value)


def test_a_cached_go_tool_counts_as_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no kind, no helm, no go
    monkeypatch.setenv("KADENCE_CACHE_DIR", str(tmp_path / "cache"))
    for name, version in (("kind", binaries.KIND_VERSION), ("helm", binaries.HELM_VERSION)):
        path = binaries.go_tool_path(name, version)
        path.parent.mkdir(parents=True)
        path.write_text("#!/bin/sh\n")
    assert [p.split(":")[0] for p in kind.missing_prerequisites()] == ["Docker"]


@pytest.mark.parametrize(
    ("problems", "expected"),
    [
        pytest.param([], None, id="nothing missing"),
        pytest.param(
            ["Docker: no engine (Cannot connect\n  to the daemon)"],
            "missing for a kind cluster: Docker: no engine (Cannot connect to the daemon)",
            id="a multi-line reason becomes one line",
        ),
        pytest.param(
            ["Docker: x", "helm: y"],
            "missing for a kind cluster: Docker: x; helm: y",
            id="several, in order",
        ),
    ],
)
def test_prerequisites_message(problems: list[str], expected: str | None) -> None:
    assert kind.prerequisites_message(problems) == expected


# --- commands, for real ------------------------------------------------------------------------


def test_a_failing_command_shows_its_output_tail() -> None:
    script = "import sys; print('partial output'); sys.exit('build failed: no space left')"
    with pytest.raises(kind.ClusterError) as info:
        kind.run([sys.executable, "-c", script])
    message = str(info.value)
    assert "exited 1" in message
    assert "build failed: no space left" in message
    assert "partial output" in message


def test_a_command_that_outlives_its_timeout_is_stopped() -> None:
    with pytest.raises(kind.ClusterError, match="did not finish within 1s"):
        kind.run([sys.executable, "-c", "import time; time.sleep(30)"], timeout=1)


def test_a_long_step_says_when_it_starts_and_ends() -> None:
    said: list[str] = []
    out = kind.run(
        [sys.executable, "-c", "import sys; print(sys.stdin.read().upper())"],
        stdin="dockerfile",
        what="building x",
        say=said.append,
    )
    assert out.strip() == "DOCKERFILE"
    assert said[0] == "▶ building x …"
    assert said[-1].startswith("  done in ")


# --- argument lists ------------------------------------------------------------------------------

E2E_HELM_ARGS = [
    "--namespace",
    "kadence-system",
    "--set",
    "image.operator.repository=kadence-operator,image.operator.tag=e2e",
    "--set",
    "image.operator.pullPolicy=Never",
    "--set",
    "image.worker.repository=kadence-worker,image.worker.tag=e2e",
    "--set",
    "nats.install=true",
    "--set",
    "minio.install=true",
    "--set",
    "minio.rootPassword=e2e-minio-password",
    "--set",
    "workerNamespaces={demo}",
    "--wait",
    "--timeout",
    "8m",
]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param(
            {"tag": "e2e", "worker_namespaces": ["demo"], "minio_password": "e2e-minio-password"},
            E2E_HELM_ARGS,
            id="the e2e test's install (unchanged by the move)",
        ),
        pytest.param(
            {
                "tag": "demo",
                "worker_namespaces": ["team-a", "team-b"],
                "minio_password": "pw",
                "namespace": "ops",
                "timeout": "2m",
                "extra": {"replicaCount": "1"},
            },
            [
                "--namespace",
                "ops",
                "--set",
                "image.operator.repository=kadence-operator,image.operator.tag=demo",
                "--set",
                "image.operator.pullPolicy=Never",
                "--set",
                "image.worker.repository=kadence-worker,image.worker.tag=demo",
                "--set",
                "nats.install=true",
                "--set",
                "minio.install=true",
                "--set",
                "minio.rootPassword=pw",
                "--set",
                "workerNamespaces={team-a,team-b}",
                "--set",
                "replicaCount=1",
                "--wait",
                "--timeout",
                "2m",
            ],
            id="two worker namespaces, extra values before the wait",
        ),
    ],
)
def test_helm_install_args(kwargs: dict[str, Any], expected: list[str]) -> None:
    assert kind.helm_install_args(**kwargs) == expected


def _set_keys(args: list[str]) -> list[str]:
    keys = []
    for flag, value in itertools.pairwise(args):
        if flag == "--set":
            for assignment in value.split(",") if "{" not in value else [value]:
                keys.append(assignment.split("=", 1)[0])
    return keys


def test_demo_helm_args_name_values_the_chart_has() -> None:
    args = demo_kind.helm_args(operator_image_id="sha256:0123abcd", minio_password="pw")
    assert args[-3:] == ["--wait", "--timeout", "8m"]
    assert "podAnnotations.kadence\\.io/demo-image=sha256:0123abcd" in args
    assert "scheduler.statusInterval=1" in args
    values = kind.chart_values()
    for key in _set_keys(args):
        *parents, leaf = key.replace("\\.", "\0").split(".")
        node: Any = values
        for part in parents:
            node = node[part.replace("\0", ".")]
        assert isinstance(node, dict), key
        # podAnnotations is a free map; every other key is one the chart declares.
        assert leaf.replace("\0", ".") in node or parents == ["podAnnotations"], key


def test_demo_minio_password_is_generated_once_and_private(tmp_path: Path) -> None:
    first = demo_kind.minio_password(tmp_path / "state")
    assert len(first) >= 24
    assert demo_kind.minio_password(tmp_path / "state") == first  # reused with the cluster
    assert (tmp_path / "state" / demo_kind.PASSWORD_FILE).stat().st_mode & 0o077 == 0
    assert demo_kind.minio_password(tmp_path / "other") != first


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        pytest.param(
            kind.create_cluster_argv(Path("/bin/kind"), "kadence-demo"),
            ["/bin/kind", "create", "cluster", "--name", "kadence-demo", "--wait", "3m"],
            id="create",
        ),
        pytest.param(
            kind.delete_cluster_argv(Path("/bin/kind"), "kadence-demo"),
            ["/bin/kind", "delete", "cluster", "--name", "kadence-demo"],
            id="delete",
        ),
        pytest.param(
            kind.load_image_argv(Path("/bin/kind"), "kadence-demo", "kadence-worker:demo"),
            ["/bin/kind", "load", "docker-image", "--name", "kadence-demo", "kadence-worker:demo"],
            id="load",
        ),
    ],
)
def test_kind_argv(argv: list[str], expected: list[str]) -> None:
    assert argv == expected


def test_docker_builds_match_the_e2e_commands() -> None:
    repo = Path("/src/kadence")
    builds = kind.docker_builds(kind.Images.tagged("e2e"), repo=repo)
    operator_dockerfile, worker_dockerfile, examples_dockerfile = (
        f"/src/kadence/{c}/Dockerfile" for c in ("operator", "worker", "examples")
    )
    assert [(b.image, b.argv) for b in builds] == [
        (
            "kadence-operator:e2e",
            [
                "docker",
                "build",
                "-f",
                operator_dockerfile,
                "-t",
                "kadence-operator:e2e",
                "/src/kadence",
            ],
        ),
        (
            "kadence-worker:e2e",
            [
                "docker",
                "build",
                "-f",
                worker_dockerfile,
                "-t",
                "kadence-worker:e2e",
                "/src/kadence",
            ],
        ),
        (
            "kadence-examples:e2e",
            [
                "docker",
                "build",
                "-f",
                examples_dockerfile,
                "--build-arg",
                "WORKER_IMAGE=kadence-worker:e2e",
                "-t",
                "kadence-examples:e2e",
                "/src/kadence",
            ],
        ),
    ]
    for dockerfile in ("operator/Dockerfile", "worker/Dockerfile", "examples/Dockerfile"):
        assert (kind.REPO / dockerfile).is_file()


def test_examples_dockerfile_builds_from_the_worker_image_argument() -> None:
    """The examples image is the worker image named by WORKER_IMAGE plus examples/ in /app."""
    text = (kind.REPO / "examples" / "Dockerfile").read_text()
    instructions = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert instructions == [
        "ARG WORKER_IMAGE=kadence-worker:dev",
        "FROM ${WORKER_IMAGE}",
        "COPY --chown=65532:65532 examples/ /app/",
    ]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param(
            {
                "nats": {"server": {"image": {"repository": "nats", "tag": "2-alpine"}}},
                "minio": {"image": {"repository": "quay.io/minio/minio", "tag": "R1"}},
            },
            ["nats:2-alpine", "quay.io/minio/minio:R1"],
            id="synthetic",
        ),
    ],
)
def test_bundled_server_images(values: dict[str, Any], expected: list[str]) -> None:
    assert kind.bundled_server_images(values) == expected


def test_bundled_server_images_of_the_chart() -> None:
    nats, minio = kind.bundled_server_images(kind.chart_values())
    assert nats.startswith("nats:")
    assert minio.startswith("quay.io/minio/minio:")


# --- manifests and status ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        pytest.param({"major": "1", "minor": "25", "gitVersion": "v1.25.3"}, "v1.25.3", id="1.25"),
        pytest.param(
            {"major": "1", "minor": "27+", "gitVersion": "v1.27.9-gke"}, "v1.27", id="27+"
        ),
        pytest.param({"major": "1", "minor": "28", "gitVersion": "v1.28.0"}, None, id="1.28"),
        pytest.param({"major": "1", "minor": "36", "gitVersion": "v1.36.1"}, None, id="1.36"),
        pytest.param({"major": "1", "minor": "30+"}, None, id="30+ without gitVersion"),
        pytest.param({}, "cannot tell", id="no server version"),
    ],
)
def test_kubernetes_version_problem(server: dict[str, str], expected: str | None) -> None:
    problem = kind.kubernetes_version_problem({"serverVersion": server})
    if expected is None:
        assert problem is None
    else:
        assert problem is not None
        assert expected in problem


@pytest.mark.parametrize(
    ("runs", "trigger", "expected"),
    [
        pytest.param([], None, False, id="no runs"),
        pytest.param([{"state": "Running"}], None, False, id="running"),
        pytest.param([{"state": "Succeeded", "output": []}], None, False, id="no output"),
        pytest.param(
            [{"state": "Succeeded", "output": [{"uri": "s3://b/k"}]}], None, True, id="output"
        ),
        pytest.param(
            [{"state": "Succeeded", "trigger": "Schedule", "output": [{"uri": "s3://b/k"}]}],
            "Manual",
            False,
            id="output of another trigger",
        ),
        pytest.param(
            [
                {"state": "Failed", "trigger": "Manual"},
                {"state": "Succeeded", "trigger": "Manual", "output": [{"uri": "s3://b/k"}]},
            ],
            "Manual",
            True,
            id="a manual run with output",
        ),
    ],
)
def test_has_output(runs: list[dict[str, Any]], trigger: str | None, expected: bool) -> None:
    job = {"metadata": {"name": "j"}, "status": {"runs": runs}}
    assert kind.has_output(job, trigger=trigger) is expected


def test_has_output_without_status() -> None:
    assert kind.has_output({"metadata": {"name": "j"}}) is False


def test_demo_queue_runs_the_examples_image_with_minio_keys() -> None:
    queue = kind.demo_queue(namespace="demo", image="kadence-examples:demo", minio_password="pw")
    workers = queue["spec"]["workers"]
    assert queue["metadata"] == {"name": demo.QUEUE, "namespace": "demo"}
    assert workers["image"] == "kadence-examples:demo"
    assert workers["serviceAccountName"] == "kadence-worker"
    assert workers["replicas"] == 1
    assert "autoscale" not in workers
    env = {e["name"]: e["value"] for e in workers["env"]}
    assert env["KADENCE_S3_ACCESS_KEY"] == kind.MINIO_USER
    assert env["KADENCE_S3_SECRET_KEY"] == "pw"


def test_demo_jobs_are_the_examples_in_the_namespace() -> None:
    jobs = kind.demo_jobs(namespace="demo")
    assert {j["metadata"]["name"] for j in jobs} >= {"heartbeat-report", "import-2025-01-31"}
    assert {j["metadata"]["namespace"] for j in jobs} == {"demo"}
    oneshot = next(j for j in jobs if j["metadata"]["name"] == "import-2025-01-31")
    # demo-kind uploads this object before applying the Jobs, as `make demo` does.
    assert oneshot["spec"]["input"] == {"bucket": demo.INPUT_BUCKET, "key": demo.INPUT_KEY}


def test_namespaces_enforce_restricted() -> None:
    manifest = kind.namespace_manifest("demo")
    assert manifest["metadata"]["name"] == "demo"
    assert manifest["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


# --- the live view both demos show ---------------------------------------------------------------

JOB = {
    "metadata": {"name": "heartbeat-report"},
    "status": {
        "runs": [
            {
                "runId": "heartbeat-report-1",
                "state": "Succeeded",
                "scheduledAt": "2025-06-01T12:00:05Z",
                "startedAt": "2025-06-01T12:00:05Z",
                "finishedAt": "2025-06-01T12:00:06Z",
                "output": [{"uri": "s3://kadence-outputs/heartbeat-report-1/report.csv"}],
            }
        ]
    },
}


@contextlib.contextmanager
def _api_serving_jobs(tmp_path: Path) -> Iterator[Path]:
    """A real HTTP server on loopback that answers the Job list as the API server would, and a
    kubeconfig pointing at it."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/apis/kadence.io/v1alpha1/namespaces/demo/jobs"):
                body = json.dumps({"kind": "JobList", "items": [JOB]}).encode()
                self.send_response(200)
            else:
                body = b"{}"
                self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {"server": f"http://127.0.0.1:{server.server_address[1]}"},
                    }
                ],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    try:
        yield kubeconfig
    finally:
        server.shutdown()
        server.server_close()


def test_watch_runs_reads_jobs_through_the_kubeconfig(tmp_path: Path) -> None:
    out = io.StringIO()
    console = Console(file=out, width=160, force_terminal=False)
    with _api_serving_jobs(tmp_path) as kubeconfig:
        end = demo.watch_runs(kubeconfig=kubeconfig, console=console, seconds=1.5)
    assert end == demo.ViewEnd(runs_with_output=1, interrupted=False)
    shown = out.getvalue()
    assert "heartbeat-report-1" in shown
    assert "s3://kadence-outputs/heartbeat-report-1/report.csv" in shown


def test_watch_runs_ends_when_the_check_raises(tmp_path: Path) -> None:
    def check() -> None:
        raise RuntimeError("kadence-operator exited")

    console = Console(file=io.StringIO(), force_terminal=False)
    with (
        _api_serving_jobs(tmp_path) as kubeconfig,
        pytest.raises(RuntimeError, match="kadence-operator exited"),
    ):
        demo.watch_runs(kubeconfig=kubeconfig, console=console, seconds=30, check=check)


def _job(state: str, outputs: list[str]) -> dict[str, Any]:
    run = {**JOB["status"]["runs"][0], "state": state, "output": [{"uri": u} for u in outputs]}
    return {"metadata": {"name": "heartbeat-report"}, "status": {"runs": [run]}}


def test_run_log_prints_a_line_per_change_of_a_run() -> None:
    out = io.StringIO()
    log = demo.RunLog(Console(file=out, width=200, force_terminal=False))
    uri = "s3://kadence-outputs/heartbeat-report-1/report.csv"
    assert log.update([_job("Running", [])]) == 0
    assert log.update([_job("Running", [])]) == 0  # nothing changed: nothing printed
    assert log.update([_job("Succeeded", [uri])]) == 1
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].split()[:4] == ["12:00:05", "heartbeat-report", "heartbeat-report-1", "Running"]
    assert lines[1].split()[3] == "Succeeded"
    assert lines[1].endswith(uri)
