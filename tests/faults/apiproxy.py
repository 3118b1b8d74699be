"""An HTTPS reverse proxy in front of the run's kube-apiserver that can answer 409 and 429.

The operators and workers of a fault run reach the API server through it (their kubeconfig
names it and carries its CA); the run's own checks talk to the API server directly. It is a
process of its own (``python -m tests.faults.apiproxy``, a :class:`ManagedProcess` the
:class:`~tests.faults.stack.Stack` starts and stops by PID), so its event loop is not the test's.

- It terminates TLS with its own certificate (a CA and a server certificate for 127.0.0.1,
  :func:`write_certificates`) and forwards every request, headers included (``Authorization``,
  ``User-Agent``), to the API server over TLS, verifying the API server's certificate. Responses
  are streamed as they come (a watch is one long chunked response), bodies as the API server
  encoded them.
- While the *control file* exists (:meth:`ApiProxy.fail` writes it, :meth:`ApiProxy.heal`
  removes it; the proxy looks every 0.1 s), it answers a seeded fraction of the requests under
  ``/api`` and ``/apis`` itself, without forwarding them, with the ``Status`` body the API
  server would send: writes (POST, PUT, PATCH) get ``409 Conflict`` ("the object has been
  modified") or ``429 TooManyRequests`` (``Retry-After: 1``), every other request (new watches
  included) ``429``. Watches already open keep streaming.
- When the API server is down (the ``apiserver-down`` fault) it answers ``502 Bad Gateway``,
  and streams open at that moment are cut (the connection is aborted), as a real proxy does.

Its log has one line per injected answer (method, path, code, user agent), one per 502, and a
summary when a failing window ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import random
import signal
import ssl
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from kadence_devstack import pki
from kadence_devstack.procs import ManagedProcess, free_port
from tests.faults import procenv

#: What the proxy logs once it listens (its readiness line).
READY = "listening on"
#: Headers of one hop only (RFC 9110 §7.6.1), never forwarded; the lengths are set again.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
WRITES = frozenset({"POST", "PUT", "PATCH"})
CONFLICT_MESSAGE = (
    "the object has been modified; please apply your changes to the latest version and try again"
)
POLL = 0.1  # seconds between looks at the control file


# -- certificates -------------------------------------------------------------------------------


def write_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate it signed for 127.0.0.1 and localhost: the paths of the
    CA certificate (for the clients' kubeconfig), the server certificate and its key."""
    files = pki.write_server_certificate(
        folder, ca_name="kadence fault-proxy CA", common_name="127.0.0.1", days=7
    )
    return files.ca, files.cert, files.key


# -- the test's side: the process and its switch --------------------------------------------------


@dataclass
class ApiProxy:
    """The proxy process (not started yet; stopping it then does nothing)."""

    workdir: Path
    log_path: Path
    port: int = 0
    ca_file: Path = Path()
    process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def control_file(self) -> Path:
        return self.workdir / "failing.json"

    def start(
        self, *, backend: str, backend_ca: Path, ready_token: str, timeout: float = 30.0
    ) -> None:
        """Start the proxy in front of ``backend`` (the API server's URL; ``backend_ca`` its CA)
        and wait until a ``/readyz`` through it (``ready_token``, verifying the proxy's CA)
        answers 200."""
        self.heal()
        self.ca_file, cert, key = write_certificates(self.workdir / "pki")
        self.port = free_port()
        env = procenv.helper_env()
        self.process = ManagedProcess(
            name="kube-apiserver proxy",
            argv=[
                sys.executable,
                "-m",
                "tests.faults.apiproxy",
                f"--port={self.port}",
                f"--cert={cert}",
                f"--key={key}",
                f"--backend={backend}",
                f"--backend-ca={backend_ca}",
                f"--control={self.control_file}",
            ],
            log_path=self.log_path,
            env=env,
        )
        self.process.start(ready=lambda: self._ready(ready_token), timeout=timeout)

    def _ready(self, token: str) -> bool:
        import requests  # the test's side only; the proxy process does without it

        answer = requests.get(
            f"{self.url}/readyz",
            headers={"Authorization": f"Bearer {token}"},
            verify=str(self.ca_file),
            timeout=2,
        )
        return answer.ok

    def fail(self, *, rate: float, seed: int) -> None:
        """Answer ``rate`` of the requests with 409/429 (decided by ``random.Random(seed)``)
        from the proxy's next look at the control file on (within 0.1 s)."""
        tmp = self.control_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"rate": rate, "seed": seed}))
        tmp.replace(self.control_file)  # atomic: the proxy never reads half a file

    def heal(self) -> None:
        """Forward every request again (within 0.1 s)."""
        self.control_file.unlink(missing_ok=True)

    def stop(self) -> None:
        self.heal()
        if self.process is not None:
            self.process.stop()


# -- the proxy process --------------------------------------------------------------------------


def _stamp() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def log(line: str) -> None:
    print(f"{_stamp()} {line}", flush=True)


def is_watch(request: web.BaseRequest) -> bool:
    return request.query.get("watch", "").lower() in ("true", "1") or "/watch/" in request.path


def agent_of(request: web.BaseRequest) -> str:
    """The client's product (``kadence-operator``, ``kadence-worker``, ``kopf``, ...)."""
    agent = request.headers.get("User-Agent", "")
    return agent.split("/", 1)[0].split(" ", 1)[0] or "-"


def resource_of(path: str) -> tuple[str, str, str]:
    """``(group, resource, name)`` of an API path (``/api/v1/...`` or ``/apis/g/v/...``)."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"]:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"]:
        group, rest = (parts[1] if len(parts) > 1 else ""), parts[3:]
    else:
        return "", "", ""
    if rest[:1] == ["namespaces"] and len(rest) > 2:
        rest = rest[2:]
    resource = rest[0] if rest else ""
    name = rest[1] if len(rest) > 1 else ""
    return group, resource, name


def status_body(code: int, reason: str, message: str, details: dict[str, Any]) -> bytes:
    """A ``Status`` as the API server sends it with an error."""
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details,
        "code": code,
    }
    return json.dumps(body).encode()


def too_many_requests() -> web.Response:
    body = status_body(
        429,
        "TooManyRequests",
        "Too many requests, please try again later.",
        {"retryAfterSeconds": 1},
    )
    return web.Response(
        status=429,
        body=body,
        content_type="application/json",
        headers={"Retry-After": "1"},
    )


def conflict(path: str) -> web.Response:
    group, resource, name = resource_of(path)
    qualified = f"{resource}.{group}" if group else resource
    details = {"name": name, "group": group, "kind": resource}
    message = f'Operation cannot be fulfilled on {qualified} "{name}": {CONFLICT_MESSAGE}'
    body = status_body(409, "Conflict", message, details)
    return web.Response(status=409, body=body, content_type="application/json")


@dataclass
class Failing:
    """One failing window: its rate, its dice and what it did."""

    rate: float
    seed: int
    since: float = field(default_factory=time.monotonic)
    rng: random.Random = field(init=False)
    injected: Counter[tuple[int, str]] = field(default_factory=Counter)
    forwarded: Counter[tuple[int, str]] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def decide(self, method: str, path: str) -> int:
        """The code to answer with instead of forwarding; 0: forward."""
        if not (path == "/api" or path.startswith(("/api/", "/apis"))):
            return 0
        if self.rng.random() >= self.rate:
            return 0
        if method in WRITES and self.rng.random() < 0.5:
            return 409
        return 429

    def summary(self) -> str:
        def fmt(counts: Counter[tuple[int, str]]) -> str:
            return ", ".join(f"{code} {agent} x{n}" for (code, agent), n in sorted(counts.items()))

        took = time.monotonic() - self.since
        return (
            f"failing off after {took:.1f}s: injected {sum(self.injected.values())} "
            f"({fmt(self.injected) or 'none'}); forwarded {sum(self.forwarded.values())} "
            f"({fmt(self.forwarded) or 'none'})"
        )


class Proxy:
    def __init__(self, *, backend: str, backend_ca: Path, control: Path) -> None:
        self.backend = backend.rstrip("/")
        self.backend_ssl = ssl.create_default_context(cafile=str(backend_ca))
        self.control = control
        self.failing: Failing | None = None
        self.session: aiohttp.ClientSession | None = None
        self.totals: Counter[tuple[int, str]] = Counter()

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(ssl=self.backend_ssl, limit=0, keepalive_timeout=15)
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
            auto_decompress=False,  # bodies pass as the API server encoded them
            skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def watch_control(self) -> None:
        """Switch failing on while the control file exists, off when it is gone."""
        while True:
            settings: dict[str, Any] | None = None
            with contextlib.suppress(FileNotFoundError, ValueError):
                settings = json.loads(self.control.read_text())
            if settings is not None and self.failing is None:
                self.failing = Failing(float(settings["rate"]), int(settings["seed"]))
                log(f"failing on: rate {self.failing.rate:.2f}, seed {self.failing.seed}")
            elif settings is None and self.failing is not None:
                log(self.failing.summary())
                self.failing = None
            await asyncio.sleep(POLL)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        agent = agent_of(request)
        failing = self.failing
        if failing is not None:
            code = failing.decide(request.method, request.path)
            if code:
                failing.injected[code, agent] += 1
                self.totals[code, agent] += 1
                watch = " (watch)" if is_watch(request) else ""
                log(f"inject {code} {request.method} {request.path_qs}{watch} ua={agent}")
                return conflict(request.path) if code == 409 else too_many_requests()
        response = await self.forward(request, agent)
        if failing is not None and failing is self.failing:
            failing.forwarded[response.status, agent] += 1
        return response

    async def forward(self, request: web.Request, agent: str) -> web.StreamResponse:
        assert self.session is not None
        headers = CIMultiDict(
            (k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP
        )
        body = await request.read() if request.body_exists else None
        # As received (still percent-encoded), so the API server gets the very same query.
        url = URL(self.backend + request.raw_path, encoded=True)
        retries = 1 if request.method in ("GET", "HEAD") else 0
        while True:
            try:
                upstream = await self.session.request(
                    request.method, url, headers=headers, data=body, allow_redirects=False
                )
                break
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as error:
                # A kept-alive connection the API server closed (e.g. it restarted): once more.
                if retries and not isinstance(error, aiohttp.ClientConnectorError):
                    retries -= 1
                    continue
                return self.bad_gateway(request, agent, error)
            except (aiohttp.ClientError, TimeoutError) as error:
                return self.bad_gateway(request, agent, error)
        async with upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for key, value in upstream.headers.items():
                if key.lower() not in HOP_BY_HOP:
                    response.headers.add(key, value)
            if upstream.content_length is not None:
                response.content_length = upstream.content_length
            elif request.method != "HEAD" and upstream.status not in (204, 304):
                response.enable_chunked_encoding()
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    try:
                        await response.write(chunk)
                    except ConnectionResetError:  # the client went away: nothing to answer
                        return response
            except (aiohttp.ClientError, TimeoutError) as error:
                # The API server went away mid-stream: cut the client's stream too, so it sees
                # a broken response and not a complete (truncated) one.
                log(f"cut {request.method} {request.path_qs} ua={agent}: {type(error).__name__}")
                if request.transport is not None:
                    request.transport.abort()
                return response
            with contextlib.suppress(ConnectionResetError):
                await response.write_eof()
            return response

    def bad_gateway(self, request: web.Request, agent: str, error: BaseException) -> web.Response:
        what = f"{type(error).__name__}: {error}"
        log(f"502 {request.method} {request.path_qs} ua={agent}: {what}")
        return web.Response(
            status=502, text=f"502 Bad Gateway: the API server is unreachable ({what})\n"
        )


async def serve(args: argparse.Namespace) -> None:
    proxy = Proxy(backend=args.backend, backend_ca=args.backend_ca, control=args.control)
    await proxy.start()
    app = web.Application(client_max_size=256 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    # A client that goes away cancels its handler, so a dead client's watch does not linger; on
    # SIGTERM, open watches are not waited for.
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(str(args.cert), str(args.key))
    site = web.TCPSite(runner, "127.0.0.1", args.port, ssl_context=tls)
    await site.start()
    log(f"{READY} https://127.0.0.1:{args.port}, forwarding to {proxy.backend}")
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    control = asyncio.create_task(proxy.watch_control())
    try:
        await stopping.wait()
    finally:
        control.cancel()
        if proxy.failing is not None:
            log(proxy.failing.summary())
        injected = ", ".join(f"{c} {a} x{n}" for (c, a), n in sorted(proxy.totals.items()))
        log(f"stopping; injected in all: {sum(proxy.totals.values())} ({injected or 'none'})")
        await runner.cleanup()
        await proxy.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.faults.apiproxy", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--backend", required=True, help="the API server's URL")
    parser.add_argument("--backend-ca", type=Path, required=True)
    parser.add_argument("--control", type=Path, required=True, help="failing while it exists")
    asyncio.run(serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
