"""``kadence-devstack``: build the control plane once, run the local stack in the foreground, or run
the demo on it (``demo``) or on a kind cluster through the Helm chart (``demo-kind``)."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from kadence_devstack import binaries
from kadence_devstack.procs import SetupError, StartError
from kadence_devstack.stack import LocalStack

app = typer.Typer(help="Real servers for Kadence's tests and local demo.", no_args_is_help=True)
console = Console(stderr=True)


@app.command()
def build(
    helm: Annotated[bool, typer.Option(help="Also go-install the pinned helm.")] = False,
    node: Annotated[
        bool,
        typer.Option(
            help="Also build the local node's binaries and images, where the node can run."
        ),
    ] = False,
) -> None:
    """Build (or find in the cache) etcd, kube-apiserver and kube-controller-manager."""
    try:
        bins = binaries.control_plane()
        console.print(f"control plane from {bins.source}: {bins.kube_apiserver.parent}")
        if helm:
            console.print(f"helm: {binaries.helm()}")
        if node:
            from kadence_devstack import hostpkgs, images
            from kadence_devstack import node as node_module

            reason = node_module.unavailable_reason()
            if reason is not None:
                console.print(f"local node: not built here ({reason})")
                return
            hostpkgs.ensure({**hostpkgs.NODE_PACKAGES, **hostpkgs.IMAGE_PACKAGES})
            node_bins = binaries.node_binaries()
            console.print(f"local node binaries: {node_bins.kubelet.parent}, …")
            for name, image in sorted(images.build_all().items()):
                console.print(f"image {name}: {image.ref}")
    except SetupError as error:
        console.print("[red]error:[/red]", escape(str(error)), soft_wrap=True)
        raise typer.Exit(2) from error


def _install_crds(kubeconfig: Path) -> int:
    """Apply crds/*.yaml when the checkout has them; returns how many were applied."""
    import subprocess

    crds = sorted((binaries.TOOLS_DIR.parent / "crds").glob("*.yaml"))
    if not crds:
        return 0
    kubectl = binaries.venv_binary("kubectl")
    argv = [str(kubectl), "--kubeconfig", str(kubeconfig), "apply", "--server-side"]
    for crd in crds:
        argv += ["-f", str(crd)]
    subprocess.run(argv, check=True, capture_output=True, text=True)
    return len(crds)


@app.command()
def up(
    workdir: Annotated[Path, typer.Option(help="Where data, logs and kubeconfig go.")] = Path(
        ".devstack"
    ),
) -> None:
    """Start the local stack, install the CRDs, print how to reach it, and wait for Ctrl-C."""
    workdir = workdir.resolve()
    stack = LocalStack(workdir)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        with console.status("starting NATS, S3 and the Kubernetes control plane…"):
            stack.start()
        assert stack.kube is not None
        installed = _install_crds(stack.kube.kubeconfig)
        env_file = stack.write_env_file(workdir / "env")
        console.print(f"[green]local stack is up[/green] (CRDs installed: {installed})")
        for key, value in stack.environment().items():
            shown = "•••" if "SECRET" in key else value
            console.print(f"  {key}={shown}")
        console.print(f"  source {env_file}   # to use it from another shell")
        console.print("Press Ctrl-C to stop.")
        while True:
            time.sleep(3600)
    except (SetupError, StartError) as error:
        console.print(f"[red]error:[/red] {error}")
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("stopping…")
    finally:
        stack.stop()


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="Where data, logs and kubeconfig go.")] = Path(
        ".devstack"
    ),
    seconds: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: until Ctrl-C).")
    ] = None,
    stack: Annotated[
        str,
        typer.Option(
            help="`node`: the chart on the local node, runs on worker pods; `processes`: the "
            "operator and a worker as local processes; `auto`: the node where it can start."
        ),
    ] = "auto",
) -> None:
    """The whole job cycle: Kadence, the examples, and a live view of the runs."""
    from kadence_devstack import demo as demo_module
    from kadence_devstack import node as node_module

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    # A shell starting us in the background sets SIGINT to "ignore", and Python keeps that; take
    # Ctrl-C back so it always stops the demo cleanly.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if stack not in ("auto", "node", "processes"):
        console.print(f"[red]error:[/red] --stack must be auto, node or processes, not {stack!r}")
        sys.exit(2)
    workdir = workdir.resolve()
    if workdir.exists() and any(workdir.iterdir()):
        if not any((workdir / marker).exists() for marker in ("env", "kube", "logs")):
            console.print(f"[red]error:[/red] {workdir} is not empty and not a devstack folder")
            sys.exit(2)
        import shutil

        shutil.rmtree(workdir)  # a fresh cluster each time: old etcd data would confuse the view
    reason = node_module.unavailable_reason() if stack != "processes" else "--stack processes"
    try:
        if reason is None:
            from kadence_devstack import demo_node

            demo_node.run(workdir=workdir, seconds=seconds, console=console)
            return
        if stack == "node":
            raise SetupError(reason)
        console.print(f"the local node cannot start here ({reason}); running the process demo")
        demo_module.run(workdir=workdir, seconds=seconds, console=console)
    except (SetupError, StartError, RuntimeError) as error:
        console.print("[red]error:[/red]", escape(str(error)), soft_wrap=True)
        console.print(f"logs: {workdir / 'logs'}")
        sys.exit(2)


@app.command("demo-kind")
def demo_kind(
    workdir: Annotated[
        Path, typer.Option(help="Where the cluster's kubeconfig and logs go.")
    ] = Path(".devstack-kind"),
    seconds: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: until Ctrl-C).")
    ] = None,
    delete: Annotated[
        bool,
        typer.Option(
            "--delete",
            help="Delete the kind cluster on exit (default: keep it for the next run and print "
            "how to delete it).",
        ),
    ] = False,
) -> None:
    """`demo` on the kind cluster `kadence-demo`, installed with the Helm chart (needs Docker)."""
    from kadence_devstack import demo_kind as demo_kind_module
    from kadence_devstack.kind import ClusterError

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in `demo`
    try:
        demo_kind_module.run(
            workdir=workdir.resolve(), seconds=seconds, delete=delete, console=console
        )
    except (SetupError, StartError, ClusterError) as error:
        # One line for a missing prerequisite, whatever the terminal's width.
        console.print("[red]error:[/red]", escape(str(error)), soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:  # before the cluster exists, e.g. while Go installs kind
        console.print("stopped")
        sys.exit(130)


node_app = typer.Typer(
    help="A real single-node Kubernetes (kubelet, containerd, CNI, CoreDNS, kube-proxy) in a "
    "network namespace with no link out.",
    no_args_is_help=True,
)
app.add_typer(node_app, name="node")


@node_app.command("up")
def node_up(
    workdir: Annotated[Path, typer.Option(help="Where data, logs and kubeconfig go.")] = Path(
        ".devstack-node"
    ),
) -> None:
    """Build what is missing (once per machine), start the node and return once it is Ready.

    The node keeps running after this command ends; `kadence-devstack node down` stops it."""
    from kadence_devstack import node as node_module

    workdir = workdir.resolve()
    local = node_module.LocalNode(workdir)
    try:
        local.up()
    except (SetupError, StartError) as error:
        console.print("[red]error:[/red]", escape(str(error)), soft_wrap=True)
        sys.exit(2)
    console.print(f"[green]node {node_module.NODE_NAME} is Ready[/green]")
    console.print(f"  export KUBECONFIG={local.kubeconfig}")
    for name, image in sorted(local.images.items()):
        console.print(f"  image {name}: {image.ref}")
    console.print(f"  logs: {workdir / 'logs'}")
    console.print("  stop it with: kadence-devstack node down")


@node_app.command("down")
def node_down() -> None:
    """Stop the local node by the PIDs it recorded and remove its mounts, cgroups and namespace
    (also after a crash)."""
    from kadence_devstack import node as node_module

    if node_module.down():
        console.print("node stopped and cleaned up")
    else:
        console.print("no local node was running")


def main() -> None:
    app()
