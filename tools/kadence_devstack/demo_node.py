"""``make demo`` on the local node: the chart installed as users install it, the example Queue
served by its worker pods, and the same live view of runs as the process demo.

Starts the local node (:mod:`kadence_devstack.node`; the first run on a machine builds what is
missing), installs Kadence with Helm (:mod:`kadence_devstack.install`), uploads the one-shot Job's
input object, applies the examples into ``demo`` and shows each run until Ctrl-C (or
``--seconds``), then stops the node. Not for: machines where the node cannot start — ``make demo``
then runs :mod:`kadence_devstack.demo` on local processes and says why in one line.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from kadence_devstack import binaries, demo, install, kind, node


def images_of(local: node.LocalNode) -> install.LocalImages:
    refs = {name: image.ref for name, image in local.images.items()}
    return install.LocalImages(
        operator=refs["operator"],
        worker=refs["worker"],
        examples=refs["examples"],
        nats=refs["nats"],
        seaweedfs=refs["seaweedfs"],
    )


def run(*, workdir: Path, seconds: float | None, console: Console) -> int:
    """Run the demo on the local node; returns how many runs showed an output URI at the end."""

    def say(message: str) -> None:
        console.print(escape(message), highlight=False, soft_wrap=True)

    local = node.LocalNode(workdir, say=say)
    with_output = 0
    try:
        local.up()
        cluster = kind.Cluster(
            kubeconfig=local.kubeconfig,
            helm=binaries.helm(),
            demo_namespace=demo.NAMESPACE,
            queue=demo.QUEUE,
        )
        images = images_of(local)
        installed = install.install(
            cluster,
            images=images,
            worker_namespaces=[demo.NAMESPACE],
            # The view moves every second, as in the process demo.
            extra={"scheduler.statusInterval": "1"},
            say=say,
        )
        s3_ip = cluster.get("service", install.S3_SERVICE, install.SYSTEM_NAMESPACE)["spec"][
            "clusterIP"
        ]
        s3_port = local.forward(str(s3_ip), install.S3_PORT)
        demo.seed_storage(
            endpoint=f"127.0.0.1:{s3_port}",
            access_key=installed.s3_access_key,
            secret_key=installed.s3_secret_key,
        )
        cluster.apply(
            install.examples_queue(
                namespace=demo.NAMESPACE,
                image=images.examples,
                access_key=installed.s3_access_key,
                secret_key=installed.s3_secret_key,
            ),
            *kind.demo_jobs(namespace=demo.NAMESPACE),
        )
        cluster.wait_until(
            "the example Queue's worker pods to run",
            lambda: (
                cluster.get("deployment", f"{demo.QUEUE}-workers", demo.NAMESPACE)["status"].get(
                    "readyReplicas", 0
                )
                >= 1
            ),
            timeout=300,
            say=say,
        )
        console.print(f"[green]Kadence is running on the local node[/green] ({node.NODE_NAME})")
        console.print(f"  export KUBECONFIG={local.kubeconfig}   # then: kubectl get kadence -A")
        console.print(
            f"  kubectl get pods -n {demo.NAMESPACE}   # the worker pods running the runs"
        )
        end = demo.watch_runs(kubeconfig=local.kubeconfig, console=console, seconds=seconds)
        with_output = end.runs_with_output
    except KeyboardInterrupt:
        console.print("stopping…")
    finally:
        local.down()
    console.print(json.dumps({"runs_with_output": with_output}))
    return with_output
