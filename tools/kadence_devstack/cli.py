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
) -> None:
    """Build (or find in the cache) etcd, kube-apiserver and kube-controller-manager."""
    try:
        bins = binaries.control_plane()
        console.print(f"control plane from {bins.source}: {bins.kube_apiserver.parent}")
        if helm:
            console.print(f"helm: {binaries.helm()}")
    except SetupError as error:
        console.print(f"[red]error:[/red] {error}")
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
) -> None:
    """The whole job cycle: stack, operator, worker, examples, and a live view of the runs."""
    from kadence_devstack import demo as demo_module

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    # A shell starting us in the background sets SIGINT to "ignore", and Python keeps that; take
    # Ctrl-C back so it always stops the demo cleanly.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    workdir = workdir.resolve()
    if workdir.exists() and any(workdir.iterdir()):
        if not (workdir / "env").exists() and not (workdir / "kube").exists():
            console.print(f"[red]error:[/red] {workdir} is not empty and not a devstack folder")
            sys.exit(2)
        import shutil

        shutil.rmtree(workdir)  # a fresh cluster each time: old etcd data would confuse the view
    try:
        demo_module.run(workdir=workdir, seconds=seconds, console=console)
    except (SetupError, StartError, RuntimeError) as error:
        console.print(f"[red]error:[/red] {error}")
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


def main() -> None:
    app()
