"""Child processes with logs, readiness waits and guaranteed stops.

Every server the devstack starts is a :class:`ManagedProcess`: its output goes to a log file, it is
stopped with SIGTERM then SIGKILL, and the tail of its log is available for error messages.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path


class SetupError(RuntimeError):
    """The environment lacks something the stack needs; the message says what to provide."""


class StartError(RuntimeError):
    """A server did not become ready; the message carries the tail of its log."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """Return ``count`` distinct free ports (all held open together while choosing)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


@contextlib.contextmanager
def heartbeat(
    say: Callable[[str], None], still: Callable[[float], str], *, every: float = 30.0
) -> Iterator[None]:
    """While the block runs, ``say(still(elapsed_seconds))`` every ``every`` seconds: long builds
    and installs show they are alive."""
    started = time.monotonic()
    done = threading.Event()

    def beat() -> None:
        while not done.wait(every):
            say(still(time.monotonic() - started))

    threading.Thread(target=beat, daemon=True).start()
    try:
        yield
    finally:
        done.set()


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file (empty when it does not exist)."""
    try:
        data = path.read_bytes()[-64_000:]
    except OSError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


class ManagedProcess:
    """One server process: started with its log in a file, stopped for sure.

    ``ready`` is polled until it returns True or ``timeout`` seconds pass; if the process exits or
    the time runs out, :class:`StartError` is raised with the tail of the log and the process is
    stopped.
    """

    def __init__(
        self,
        *,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, *, ready: Callable[[], bool], timeout: float = 30.0) -> None:
        """Start the process and wait until ``ready()`` holds."""
        self.launch()
        self.wait_ready(ready=ready, timeout=timeout)

    def launch(self) -> None:
        """Start the process without waiting (see :meth:`wait_ready`)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"$ {' '.join(self.argv)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,  # a Ctrl-C in the terminal is ours to forward, not theirs
            )

    def wait_ready(self, *, ready: Callable[[], bool], timeout: float = 30.0) -> None:
        """Poll ``ready()``; raise :class:`StartError` with the log tail on exit or timeout."""
        if self._proc is None:
            raise StartError(f"{self.name} was not started")
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise StartError(
                    f"{self.name} exited with code {code} during start-up "
                    f"(log: {self.log_path}):\n{tail(self.log_path)}"
                )
            try:
                if ready():
                    return
            except Exception:  # readiness probes may fail in many ways before the server is up
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise StartError(
                    f"{self.name} was not ready after {timeout:.0f}s "
                    f"(log: {self.log_path}):\n{tail(self.log_path)}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the process (SIGSTOP/SIGCONT/SIGKILL in failure tests)."""
        if self._proc is not None and self._proc.poll() is None:
            os.kill(self._proc.pid, sig)

    def stop(self, *, grace: float = 10.0) -> None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL the whole process group."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGCONT)  # a SIGSTOPped server cannot handle SIGTERM
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything the server left in its group

    def kill(self) -> None:
        """SIGKILL now, as a crash would (the process does not get to clean up)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)
