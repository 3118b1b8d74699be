"""A TCP proxy per worker route that can blackhole it: the ``worker-partition`` fault.

Each worker of a fault run reaches nats-server, and the API server (through :mod:`.apiproxy`),
through its own listening port of this proxy: a *route* (``w1-nats``, ``w1-api``, ...) is a
port on 127.0.0.1 whose connections are forwarded, bytes both ways, to one backend. It is a
process of its own (``python -m tests.faults.tcpproxy``, a :class:`ManagedProcess` the
:class:`~tests.faults.stack.Stack` starts and stops by PID), as the API server's proxy is.

- While a route is *partitioned* (named in the control file, which :meth:`TcpProxy.partition`
  writes; the proxy looks every 0.1 s and confirms what it applied in a second file), its
  connections carry nothing, in either direction, and stay open: no RST, no FIN, as behind a
  firewall's DROP rule. The proxy stops passing on what it reads, and soon stops reading: what
  the peers send stays in the proxy's read buffers (up to 128 KiB per direction) and then in the
  kernel's; neither peer learns anything until its own timeouts fire. A connection opened during the
  partition is accepted (the kernel completes the handshake anyway) but not forwarded: the
  client waits for the server's first bytes as it would for a SYN that goes unanswered.
- On heal, the held bytes are delivered, in order, and forwarding goes on: a DROP shorter than
  TCP's retransmission limit (about 15 minutes with Linux's defaults) loses no byte of an open
  connection, because the sender retransmits until the path is back. (Dropping the bytes and
  keeping the connection would be no network's behaviour: TCP delivers the stream whole or
  resets it.) A connection opened during the partition is forwarded from then on.
- When one side closes (nats-server stopped by the ``nats-restart`` fault, a worker killed),
  the proxy closes the other: a client of a dead backend sees its connection end and
  reconnects through the proxy, which then closes each new connection at once while the
  backend refuses it, as a proxy whose backend is gone does.

Its log has one line per connection opened and closed (with its byte counts), per partition
and per heal (with the connections it held).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import itertools
import json
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kadence_devstack.procs import ManagedProcess, free_ports
from tests.faults import procenv

#: What the proxy logs once every route listens (its readiness line).
READY = "listening on every route"
POLL = 0.1  # seconds between looks at the control file
CHUNK = 64 * 1024
#: Seconds to connect to a backend before the client's connection is closed.
CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True)
class Route:
    """One listening port on 127.0.0.1 and the backend its connections go to."""

    name: str
    port: int
    backend_host: str
    backend_port: int

    def spec(self) -> str:
        return f"{self.name}={self.port}:{self.backend_host}:{self.backend_port}"

    @classmethod
    def parse(cls, spec: str) -> Route:
        """The inverse of :meth:`spec`: ``name=port:host:port``."""
        name, _, rest = spec.partition("=")
        port, host, backend_port = rest.split(":")
        if not name or not host:
            raise ValueError(f"not a route: {spec!r} (name=port:host:port)")
        return cls(name, int(port), host, int(backend_port))


# -- the test's side: the process and its switch --------------------------------------------------


@dataclass
class TcpProxy:
    """The proxy process (not started yet; stopping it then does nothing)."""

    workdir: Path
    log_path: Path
    routes: dict[str, Route] = field(default_factory=dict)
    process: ManagedProcess | None = None
    _serial: itertools.count[int] = field(init=False, default_factory=lambda: itertools.count(1))

    @property
    def control_file(self) -> Path:
        return self.workdir / "partitioned.json"

    @property
    def applied_file(self) -> Path:
        return self.workdir / "applied.json"

    def port(self, route: str) -> int:
        return self.routes[route].port

    def start(self, backends: Mapping[str, tuple[str, int]], *, timeout: float = 30.0) -> None:
        """Start the proxy with one route per ``backends`` entry (name -> backend host, port),
        each on a free port, and wait until every route listens."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.control_file.unlink(missing_ok=True)
        self.applied_file.unlink(missing_ok=True)
        ports = free_ports(len(backends))
        self.routes = {
            name: Route(name, port, host, backend_port)
            for (name, (host, backend_port)), port in zip(backends.items(), ports, strict=True)
        }
        env = procenv.helper_env()
        self.process = ManagedProcess(
            name="tcp proxy",
            argv=[
                sys.executable,
                "-m",
                "tests.faults.tcpproxy",
                f"--control={self.control_file}",
                f"--applied={self.applied_file}",
                *(f"--route={route.spec()}" for route in self.routes.values()),
            ],
            log_path=self.log_path,
            env=env,
        )
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.process.start(ready=lambda: self._logged(READY, offset), timeout=timeout)

    def _logged(self, marker: str, offset: int) -> bool:
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return marker.encode() in log.read()

    def partition(self, *routes: str, timeout: float = 5.0) -> None:
        """Blackhole these routes (and only these: the others forward again); returns once the
        proxy has applied it (it looks every 0.1 s)."""
        unknown = set(routes) - set(self.routes)
        if unknown:
            raise KeyError(f"no such route: {', '.join(sorted(unknown))}")
        serial = next(self._serial)
        tmp = self.control_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"serial": serial, "partitioned": sorted(routes)}))
        tmp.replace(self.control_file)  # atomic: the proxy never reads half a file
        if self.process is None or not self.process.running:
            return
        deadline = time.monotonic() + timeout
        while _applied_serial(self.applied_file) < serial:
            if time.monotonic() > deadline or not self.process.running:
                raise TimeoutError(f"the tcp proxy did not apply {routes} in {timeout:.0f}s")
            time.sleep(0.02)

    def heal(self, *, timeout: float = 5.0) -> None:
        """Forward every route again; the bytes held during the partition are delivered."""
        self.partition(timeout=timeout)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


def _applied_serial(path: Path) -> int:
    with contextlib.suppress(FileNotFoundError, ValueError, KeyError, TypeError):
        return int(json.loads(path.read_text())["serial"])
    return 0


# -- the proxy process --------------------------------------------------------------------------


def _stamp() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def log(line: str) -> None:
    print(f"{_stamp()} {line}", flush=True)


@dataclass(eq=False)
class Connection:
    number: int
    peer: str
    opened: float = field(default_factory=time.monotonic)
    up: int = 0  # bytes client -> backend
    down: int = 0  # bytes backend -> client
    #: Bytes read just as a partition began, held until it healed.
    held: int = 0


class RouteState:
    """A route's listener, its connections and whether it forwards."""

    def __init__(self, route: Route) -> None:
        self.route = route
        self.forwarding = asyncio.Event()
        self.forwarding.set()
        self.partitioned_at = 0.0
        self.connections: set[Connection] = set()
        self.numbers = itertools.count(1)
        #: Connections accepted during the current partition.
        self.accepted_while_partitioned = 0

    @property
    def name(self) -> str:
        return self.route.name

    def partition(self) -> None:
        if not self.forwarding.is_set():
            return
        self.forwarding.clear()
        self.partitioned_at = time.monotonic()
        self.accepted_while_partitioned = 0
        for conn in self.connections:
            conn.held = 0
        log(f"partition {self.name}: {len(self.connections)} connections open, nothing forwarded")

    def heal(self) -> None:
        if self.forwarding.is_set():
            return
        took = time.monotonic() - self.partitioned_at
        held = sum(c.held for c in self.connections)
        log(
            f"heal {self.name} after {took:.1f}s: {len(self.connections)} connections open "
            f"({self.accepted_while_partitioned} accepted during the partition), "
            f"{held} bytes in hand delivered"
        )
        self.forwarding.set()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = "{}:{}".format(*writer.get_extra_info("peername", ("?", 0))[:2])
        conn = Connection(next(self.numbers), peer)
        self.connections.add(conn)
        where = f"{self.name} #{conn.number}"
        if not self.forwarding.is_set():
            self.accepted_while_partitioned += 1
            log(f"{where} accepted from {peer} during the partition: not forwarded until heal")
        else:
            log(f"{where} accepted from {peer}")
        backend: asyncio.StreamWriter | None = None
        up: asyncio.Task[str] | None = None
        down: asyncio.Task[str] | None = None
        why = "?"
        try:
            await self.forwarding.wait()
            route = self.route
            try:
                backend_reader, backend_writer = await asyncio.wait_for(
                    asyncio.open_connection(route.backend_host, route.backend_port),
                    CONNECT_TIMEOUT,
                )
            except (OSError, TimeoutError) as error:
                why = f"backend unreachable ({type(error).__name__}: {error})"
                return
            backend = backend_writer
            up = asyncio.create_task(self._pump(reader, backend_writer, conn, "up"))
            down = asyncio.create_task(self._pump(backend_reader, writer, conn, "down"))
            done, pending = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
            why = next(iter(done)).result()
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        except asyncio.CancelledError:
            # The proxy is stopping. Not raised on: asyncio's stream server would log a
            # cancelled handler as an error.
            why = "proxy stopping"
            for pump in (up, down):
                if pump is not None:
                    pump.cancel()
        finally:
            self.connections.discard(conn)
            for side in (writer, backend):
                if side is not None:
                    await _close(side)
            log(
                f"{where} closed after {time.monotonic() - conn.opened:.1f}s, {why}: "
                f"up {conn.up} bytes, down {conn.down} bytes"
            )

    async def _pump(
        self,
        source: asyncio.StreamReader,
        dest: asyncio.StreamWriter,
        conn: Connection,
        direction: str,
    ) -> str:
        """Copy ``source`` to ``dest`` while the route forwards; why it stopped."""
        side = "client" if direction == "up" else "backend"
        try:
            while True:
                await self.forwarding.wait()
                data = await source.read(CHUNK)
                if not data:
                    return f"{side} closed"
                if not self.forwarding.is_set():
                    conn.held += len(data)  # read as the partition began: held until the heal
                    await self.forwarding.wait()
                dest.write(data)
                await dest.drain()
                if direction == "up":
                    conn.up += len(data)
                else:
                    conn.down += len(data)
        except OSError as error:
            return f"{side} error ({type(error).__name__}: {error})"


async def _close(side: asyncio.StreamWriter) -> None:
    """Close after what is buffered for it is written (FIN); abort (RST) if that stalls."""
    side.close()
    try:
        await asyncio.wait_for(side.wait_closed(), 2.0)
    except (OSError, TimeoutError):
        side.transport.abort()


def _read_partitioned(control: Path) -> tuple[int, set[str]] | None:
    with contextlib.suppress(FileNotFoundError, ValueError, KeyError, TypeError):
        settings = json.loads(control.read_text())
        return int(settings["serial"]), {str(name) for name in settings["partitioned"]}
    return None


async def watch_control(routes: dict[str, RouteState], control: Path, applied: Path) -> None:
    """Partition the routes the control file names, forward the others; confirm each change."""
    serial = 0
    while True:
        read = _read_partitioned(control)
        if read is not None and read[0] != serial:
            serial, partitioned = read
            for name, state in routes.items():
                if name in partitioned:
                    state.partition()
                else:
                    state.heal()
            tmp = applied.with_suffix(".tmp")
            tmp.write_text(json.dumps({"serial": serial, "partitioned": sorted(partitioned)}))
            tmp.replace(applied)
        await asyncio.sleep(POLL)


async def serve(args: argparse.Namespace) -> None:
    routes = {route.name: RouteState(route) for route in args.route}
    servers = []
    for state in routes.values():
        server = await asyncio.start_server(state.serve, "127.0.0.1", state.route.port)
        servers.append(server)
        route = state.route
        log(f"{route.name}: 127.0.0.1:{route.port} -> {route.backend_host}:{route.backend_port}")
    log(READY)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    control = asyncio.create_task(watch_control(routes, args.control, args.applied))
    try:
        await stopping.wait()
    finally:
        control.cancel()
        open_ = sum(len(state.connections) for state in routes.values())
        log(f"stopping; {open_} connections open")
        for server in servers:
            server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.tcpproxy", description=__doc__)
    parser.add_argument(
        "--route", type=Route.parse, action="append", required=True, help="name=port:host:port"
    )
    parser.add_argument("--control", type=Path, required=True, help="the routes to partition")
    parser.add_argument("--applied", type=Path, required=True, help="what was applied, written")
    asyncio.run(serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
