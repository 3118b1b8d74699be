"""``make demo-kind``: what ``make demo`` shows, on a kind cluster installed through the Helm chart.

Checks Docker, kind, helm and kubectl first and stops with one line naming what is missing; then
creates the kind cluster ``kadence-demo`` (or reuses it), builds the operator, worker and examples
images with Docker exactly as ``e2e/test_helm_install.py`` does (both use
:mod:`kadence_devstack.kind`), loads them into the node, installs the chart with its bundled NATS
and MinIO (``helm upgrade --install``, so a second run upgrades), uploads the one-shot Job's input
through a port-forward to MinIO, applies the examples into namespace ``demo`` and shows the live
view of ``make demo`` (:func:`kadence_devstack.demo.watch_runs`) through the cluster's kubeconfig.

Ctrl-C stops the view and leaves the cluster running, so the next ``make demo-kind`` skips the
cluster creation; it prints how to delete it. ``--delete`` deletes it instead.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from kadence_devstack import binaries, demo, kind
from kadence_devstack.procs import SetupError

CLUSTER = "kadence-demo"
CONTEXT = f"kind-{CLUSTER}"
TAG = "demo"
#: Where the bundled MinIO's root password is kept (generated on the first run, reused with the
#: cluster, never in the repository): ``<workdir>/minio-password``.
PASSWORD_FILE = "minio-password"
OPERATOR_DEPLOYMENT = f"{kind.RELEASE}-operator"
WORKER_DEPLOYMENT = f"{demo.QUEUE}-workers"


def minio_password(workdir: Path) -> str:
    """The demo MinIO's root password: read from ``workdir``, or generated and saved (0600)."""
    path = workdir / PASSWORD_FILE
    if path.exists():
        return path.read_text().strip()
    password = secrets.token_urlsafe(24)
    workdir.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(password + "\n")
    return password


def helm_args(*, operator_image_id: str, minio_password: str) -> list[str]:
    """``helm upgrade --install`` arguments of the demo: those of the e2e test, plus status
    patches every second (as ``make demo`` sets them) so the live view moves, and the operator
    image's id as a pod annotation so a rebuilt image rolls the operator on a reused cluster.
    Pure."""
    return kind.helm_install_args(
        tag=TAG,
        worker_namespaces=[demo.NAMESPACE],
        minio_password=minio_password,
        extra={
            "scheduler.statusInterval": "1",
            "scheduler.queueStatusInterval": "2",
            "podAnnotations.kadence\\.io/demo-image": operator_image_id,
        },
    )


def delete_hint() -> str:
    return f"kind delete cluster --name {CLUSTER}"


def run(*, workdir: Path, seconds: float | None, delete: bool, console: Console) -> int:
    """Run the demo on kind; returns how many runs showed an output URI at the end.

    Raises :class:`SetupError` (before anything is created) when a prerequisite is missing, and
    :class:`~kadence_devstack.kind.ClusterError` when a step fails; the cluster is then left
    running for inspection (or deleted with ``delete``).
    """

    def say(message: str) -> None:
        console.print(escape(message), highlight=False, soft_wrap=True)

    kind.check_prerequisites()
    kind_bin = kind.kind_binary()
    helm_bin = kind.helm_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    password = minio_password(workdir)
    with_output = 0
    cluster_is_up = False
    try:
        created = kind.ensure_cluster(kind=kind_bin, name=CLUSTER, say=say)
        cluster_is_up = True
        kubeconfig = kind.write_kubeconfig(kind=kind_bin, name=CLUSTER, path=workdir / "kubeconfig")
        cluster = kind.Cluster(
            kubeconfig=kubeconfig, helm=helm_bin, demo_namespace=demo.NAMESPACE, queue=demo.QUEUE
        )
        try:
            version = cluster.server_version()
        except kind.ClusterError as error:
            raise kind.ClusterError(
                f"the kind cluster {CLUSTER!r} exists but its API server does not answer; start "
                f"its node (`docker start {CLUSTER}-control-plane`) or delete it "
                f"(`{delete_hint()}`) and run again:\n{error}"
            ) from error
        problem = kind.kubernetes_version_problem(version)
        if problem is not None:
            raise SetupError(
                f"{problem}: delete the cluster (`{delete_hint()}`) and run again with kind >= "
                f"v0.21 on PATH, or with no kind on PATH (Go then installs kind "
                f"{binaries.KIND_VERSION})"
            )

        images = kind.Images.tagged(TAG)
        kind.build_images(images, say=say)
        kind.load_images(kind=kind_bin, name=CLUSTER, images=images, say=say)
        kind.preload_bundled_images(
            lambda image: kind.load_images(kind=kind_bin, name=CLUSTER, images=[image], say=say),
            say=say,
        )

        cluster.apply(
            kind.namespace_manifest(kind.SYSTEM_NAMESPACE), kind.namespace_manifest(demo.NAMESPACE)
        )
        if not created:
            # Helm installs crds/ on the first install only; a reused cluster gets today's CRDs
            # first, as docs/helm.md says for upgrades (taking over the fields Helm created).
            cluster.kubectl(
                "apply", "--server-side", "--force-conflicts", "-f", str(kind.CHART / "crds")
            )
        cluster.helm(
            "upgrade",
            "--install",
            kind.RELEASE,
            kind.CHART,
            *helm_args(operator_image_id=kind.image_id(images.operator), minio_password=password),
            timeout=600,
            what="helm upgrade --install with the bundled NATS and MinIO (waits up to 8m)",
            say=say,
        )
        if not created:
            # A fresh view, and worker pods of the image just built: the operator deletes the old
            # Queue's worker Deployment with it.
            cluster.kubectl(
                "delete",
                "-n",
                demo.NAMESPACE,
                "jobs.kadence.io,queues.kadence.io",
                "--all",
                "--wait=true",
                "--timeout=180s",
                timeout=240,
                what="removing the previous run's Jobs and Queue",
                say=say,
            )

        say("▶ uploading the one-shot Job's input through a port-forward to MinIO …")
        with cluster.port_forward(
            namespace=kind.SYSTEM_NAMESPACE,
            target=f"svc/{kind.MINIO_SERVICE}",
            remote_port=kind.MINIO_PORT,
            log_path=workdir / "logs" / "port-forward-minio.log",
        ) as port:
            try:
                demo.seed_storage(
                    endpoint=f"127.0.0.1:{port}",
                    access_key=kind.MINIO_USER,
                    secret_key=password,
                )
            except Exception as error:  # minio's and urllib3's errors: say which step failed
                raise kind.ClusterError(
                    f"uploading the input object to MinIO through the port-forward failed: {error}"
                ) from error

        cluster.apply(
            kind.demo_queue(
                namespace=demo.NAMESPACE, image=images.examples, minio_password=password
            ),
            *kind.demo_jobs(namespace=demo.NAMESPACE),
        )
        cluster.kubectl(
            "wait",
            "-n",
            demo.NAMESPACE,
            "--for=condition=Ready",
            f"kq/{demo.QUEUE}",
            "--timeout=300s",
            timeout=330,
            what=f"waiting for the Queue {demo.QUEUE!r} to be Ready (up to 5m)",
            say=say,
        )
        say(f"▶ waiting for the worker Deployment {WORKER_DEPLOYMENT!r} (up to 5m) …")
        cluster.wait_until(
            f"the worker Deployment {WORKER_DEPLOYMENT} to be available",
            lambda: (
                cluster.get("deployment", WORKER_DEPLOYMENT, demo.NAMESPACE)
                .get("status", {})
                .get("availableReplicas", 0)
                >= 1
            ),
            timeout=300,
            say=say,
        )

        console.print(
            f"[green]Kadence is up on kind[/green] (cluster {CLUSTER!r}); kubeconfig: "
            + escape(str(kubeconfig)),
            soft_wrap=True,
        )
        say(f"  kubectl --context {CONTEXT} get kadence -n {demo.NAMESPACE}")
        say(f"  export KUBECONFIG={kubeconfig}   # then: kubectl get kadence -A")
        end = demo.watch_runs(kubeconfig=kubeconfig, console=console, seconds=seconds)
        with_output = end.runs_with_output
        if end.interrupted:
            console.print("stopping the view…")
    except KeyboardInterrupt:
        console.print("stopping…")
    finally:
        _leave_or_delete(delete=delete, cluster_is_up=cluster_is_up, kind_bin=kind_bin, say=say)
    console.print(json.dumps({"runs_with_output": with_output}))
    return with_output


def _leave_or_delete(*, delete: bool, cluster_is_up: bool, kind_bin: Path, say: kind.Say) -> None:
    """``--delete``: delete the cluster. Otherwise leave it, and say how to delete it."""
    if delete:
        try:
            kind.run(
                kind.delete_cluster_argv(kind_bin, CLUSTER),
                timeout=300,
                what=f"deleting the kind cluster {CLUSTER!r}",
                say=say,
            )
        except kind.ClusterError as error:
            say(f"could not delete the cluster ({error}); delete it with: {delete_hint()}")
        return
    if not cluster_is_up:
        say(f"`kind create cluster` did not finish; remove what it left with: {delete_hint()}")
        return
    say(
        f"The kind cluster {CLUSTER!r} keeps running (kubectl --context {CONTEXT} get pods -A); "
        f"the next `make demo-kind` reuses it. Delete it with: {delete_hint()}"
    )
