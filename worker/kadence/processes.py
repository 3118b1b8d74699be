"""Sync handlers in child processes, for tasks registered with ``isolation="process"``.

A thread cannot be interrupted: a sync handler that runs past its attempt's timeout keeps running
(and keeps its concurrency slot) until it returns. A task registered with
``@app.task(isolation="process")`` runs in a child process instead, which the worker stops when
the attempt ends early — its timeout, a lost Lease, a Replace cancel request, the worker's
shutdown: SIGTERM first (raised in the handler as :class:`~kadence.Cancelled`, so ``finally``
blocks run), SIGKILL ``grace`` seconds later, as Celery's prefork pool does with ``time_limit``.

The children are started with multiprocessing's ``spawn`` method, a fresh interpreter: the
worker, with its event loop, NATS connections and threads, is never forked. A child that finished
a call waits for the next one, so only a child's first call pays for starting Python and
importing the task's module; a stopped child is never reused. Each call holds one of the
worker's task threads, which waits for the child's reply, so there are never more children at
work than concurrency slots. A child exits when the worker closes its pipe, and on its own when
the worker dies.

What crosses the process boundary, pickled:

- to the child: the task by reference (module, qualified name, and the module's file for apps
  loaded from a path), the validated payload, the run request, the attempt's output location,
  and once per child the worker's object store (:class:`~kadence.storage.S3Storage` pickles as
  its endpoint and credentials);
- back: the return value (stored by the worker, as for any task), or the exception raised (one
  that does not pickle comes back as its own class with its message), and the objects written.

What cannot cross fails the attempt for good with a clear error: ``TaskNotImportable``,
``PayloadNotPicklable``, ``ResultNotPicklable``. In the child, ``ctx`` is a real
:class:`~kadence.Context`: ``ctx.output`` writes to S3 from the child, ``ctx.read_input()``
reads from it, ``ctx.heartbeat()`` has the worker send an in-progress ack, ``ctx.cancelled`` turns
true with SIGTERM, and ``ctx.logger`` logs to the worker's standard error at its log level.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from types import FrameType, ModuleType
from typing import TYPE_CHECKING, Any, cast

from kadence.app import CancelFlag, Context, Fail, TaskSpec
from kadence.config import LOG_FORMAT
from kadence.protocol import OutputLocation, OutputObject, RunRequest
from kadence.storage import Cancelled, ObjectStore, OutputWriter

if TYPE_CHECKING:
    from multiprocessing.context import SpawnProcess

log = logging.getLogger("kadence.worker")

#: Seconds between SIGTERM and SIGKILL for a child whose attempt ended early.
KILL_GRACE = 5.0


class TaskProcessError(RuntimeError):
    """A task's child process could not be started, or died during the call (retried)."""


@dataclass(frozen=True)
class TaskRef:
    """A task function by name, to be imported in the child: pickle sends functions this way
    too, but cannot fall back to the module's file for apps loaded from a path."""

    task: str
    module: str
    qualname: str
    file: str | None

    @classmethod
    def of(cls, spec: TaskSpec) -> TaskRef:
        module = spec.fn.__module__
        file = getattr(sys.modules.get(module), "__file__", None)
        return cls(task=spec.name, module=module, qualname=spec.fn.__qualname__, file=file)

    def resolve(self) -> Callable[..., Any]:
        """The function, imported in this process; :class:`Fail` if it cannot be."""
        try:
            module = _import(self.module, self.file)
            target: Any = module
            for part in self.qualname.split("."):
                target = getattr(target, part)
        except Exception as error:
            raise Fail(
                f"task {self.task!r}: cannot import {self.module}.{self.qualname} in the task's "
                f"process ({type(error).__name__}: {error}); a task with isolation='process' "
                "must be a module-level function of an importable module or file",
                error_type="TaskNotImportable",
            ) from None
        if not callable(target):
            raise Fail(
                f"task {self.task!r}: {self.module}.{self.qualname} is not callable",
                error_type="TaskNotImportable",
            )
        return cast(Callable[..., Any], target)


def _import(name: str, file: str | None) -> ModuleType:
    """``import name``, or load it from ``file`` as ``kadence worker --app path.py:app`` does."""
    try:
        return importlib.import_module(name)
    except ImportError:
        if file is None:
            raise
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class _ContextArgument:
    """Stands in for ``ctx`` among the pickled arguments; the child puts its own there."""


@dataclass(frozen=True)
class _Call:
    """One call, as pickled for the child (after the :class:`TaskRef` is resolved there, so that
    the payload's classes can be found in an app loaded from a path)."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    request: RunRequest
    attempt: int
    worker: str
    fencing_token: int | None
    location: OutputLocation


@dataclass(frozen=True)
class _RaisedElsewhere:
    """An exception that does not pickle, described so the worker can rebuild its class."""

    module: str
    qualname: str
    args: tuple[Any, ...]
    message: str
    trace: str

    def rebuild(self) -> BaseException:
        """The exception as an instance of its own class (found in the worker, which imports
        the same app) without calling its ``__init__``, so that ``nonRetryableErrors`` and the
        reported error type see the real class; else a :class:`TaskProcessError`."""
        cls: Any = sys.modules.get(self.module)
        for part in self.qualname.split("."):
            cls = getattr(cls, part, None)
        error: BaseException | None = None
        if isinstance(cls, type) and issubclass(cls, Exception):
            try:
                error = cls.__new__(cls)
                error.args = self.args
            except Exception:
                error = None
        if error is None:
            error = TaskProcessError(f"{self.qualname}: {self.message}")
        error.add_note(self.trace)
        return error


def _portable(error: BaseException) -> BaseException | _RaisedElsewhere:
    """``error`` with its traceback as a note, if it survives pickling; else its description."""
    trace = "in the task's process:\n" + "".join(traceback.format_exception(error)).rstrip()
    try:
        error.add_note(trace)
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        args = error.args
        try:
            pickle.dumps(args)
        except Exception:
            args = (str(error),)
        return _RaisedElsewhere(
            module=type(error).__module__,
            qualname=type(error).__qualname__,
            args=args,
            message=str(error),
            trace=trace,
        )


# -- the child -----------------------------------------------------------------------------------


class _Terminated(Cancelled):
    """SIGTERM arrived during the call."""


class _Child:
    """What runs in the child: calls from the pipe, one at a time, until the pipe closes."""

    def __init__(self, conn: Connection, store: ObjectStore | None) -> None:
        self.conn = conn
        self.store = store
        self.send_lock = threading.Lock()
        self.tasks: dict[TaskRef, Callable[..., Any]] = {}
        self.cancel: CancelFlag | None = None
        self.terminated = False

    def send(self, message: tuple[Any, ...]) -> None:
        with self.send_lock:
            self.conn.send(message)

    def heartbeat(self) -> None:
        self.send(("heartbeat",))

    def on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self.terminated = True
        if self.cancel is not None:
            self.cancel.set()
        raise _Terminated("the attempt was stopped (SIGTERM from the worker)")

    def serve(self) -> None:
        while True:
            try:
                ref, blob = self.conn.recv()
            except (EOFError, OSError):
                return  # the worker closed the pipe: it is done with this child
            reply: bytes | None = None
            signal.signal(signal.SIGTERM, self.on_sigterm)
            try:
                reply = self.call(ref, blob)
            except _Terminated:
                pass
            finally:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
            if self.terminated or reply is None:
                # Not through sys.exit: threads the task started must not keep the process.
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(1)
            self.send(("done", reply))

    def call(self, ref: TaskRef, blob: bytes) -> bytes:
        """Run one call; the pickled ``(kind, value or exception, objects written)``."""
        try:
            fn = self.tasks.get(ref) or self.tasks.setdefault(ref, ref.resolve())
            try:
                call: _Call = pickle.loads(blob)
            except Exception as error:
                raise Fail(
                    f"task {ref.task!r}: its arguments cannot be unpickled in the task's process "
                    f"({type(error).__name__}: {error})",
                    error_type="PayloadNotPicklable",
                ) from None
        except Fail as error:
            return _pickled_reply(ref, "raised", error, ())
        self.cancel = cancel = CancelFlag()
        output = OutputWriter(self.store, call.location, cancelled=cancel.is_set)
        ctx = Context(
            request=call.request,
            attempt=call.attempt,
            output=output,
            input_store=self.store,
            heartbeat=self.heartbeat,
            worker=call.worker,
            fencing_token=call.fencing_token,
            cancel_event=cancel,
        )
        args = [ctx if isinstance(a, _ContextArgument) else a for a in call.args]
        kwargs = {k: ctx if isinstance(v, _ContextArgument) else v for k, v in call.kwargs.items()}
        try:
            value = fn(*args, **kwargs)
        except _Terminated:
            raise
        except Exception as error:
            if self.terminated:  # the task caught the Cancelled of SIGTERM and raised another
                raise _Terminated("the attempt was stopped") from None
            return _pickled_reply(ref, "raised", _portable(error), output.objects)
        finally:
            self.cancel = None
        return _pickled_reply(ref, "returned", value, output.objects)


def _pickled_reply(ref: TaskRef, kind: str, body: Any, objects: tuple[OutputObject, ...]) -> bytes:
    try:
        return pickle.dumps((kind, body, objects))
    except Exception as error:
        what = "return value" if kind == "returned" else "exception"
        failed = Fail(
            f"task {ref.task!r}: its {what} ({type(body).__qualname__}) cannot be pickled to go "
            f"back to the worker ({type(error).__name__}: {error})",
            error_type="ResultNotPicklable" if kind == "returned" else "ErrorNotPicklable",
        )
        return pickle.dumps(("raised", failed, objects))


def _watch_parent() -> None:
    """Stop this child when the worker dies (SIGKILL, OOM): no orphan runs on."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(KILL_GRACE)
        os._exit(1)

    threading.Thread(target=watch, name="kadence-parent-watch", daemon=True).start()


def _child_main(conn: Connection, store: ObjectStore | None, log_level: int) -> None:
    """The child process's entry point."""
    # Ctrl-C in a terminal reaches the whole process group: the worker decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=log_level, format=LOG_FORMAT, stream=sys.stderr)
    _watch_parent()
    _Child(conn, store).serve()


# -- the worker's side -----------------------------------------------------------------------------


class _Process:
    """One child and the worker's end of its pipe."""

    def __init__(self, process: SpawnProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn

    def reap(self, grace: float) -> None:
        """Make sure the child is gone and reaped: it exits when its pipe closes, else SIGTERM,
        and SIGKILL ``grace`` seconds later."""
        self.conn.close()
        self.process.join(grace)
        if self.process.exitcode is None:
            self.process.terminate()
            self.process.join(grace)
        if self.process.exitcode is None:
            self.process.kill()
            self.process.join()
        self.process.close()


class TaskProcesses:
    """The worker's child processes for ``isolation="process"`` tasks (see the module).

    ``store`` is sent to each child as it starts; ``grace`` is the time between SIGTERM and
    SIGKILL for a call whose attempt ended first.
    """

    def __init__(self, *, store: ObjectStore | None, grace: float = KILL_GRACE) -> None:
        self.store = store
        self.grace = grace
        self._context = multiprocessing.get_context("spawn")
        self._lock = threading.Condition()
        self._idle: list[_Process] = []
        self._busy: set[_Process] = set()
        self._closed = False

    @property
    def children(self) -> int:
        """Child processes alive (busy or idle)."""
        with self._lock:
            return len(self._idle) + len(self._busy)

    def call(self, spec: TaskSpec, args: list[Any], kwargs: dict[str, Any], ctx: Context) -> Call:
        """A call of ``spec``'s handler: run it with :meth:`Call.run` in a task thread."""
        return Call(self, spec, args, kwargs, ctx)

    def _checkout(self) -> _Process:
        with self._lock:
            if self._closed:
                raise TaskProcessError("the worker is shutting down")
            if self._idle:
                child = self._idle.pop()
                self._busy.add(child)
                return child
        mine, theirs = self._context.Pipe()
        process = self._context.Process(
            target=_child_main,
            args=(theirs, self.store, logging.getLogger().getEffectiveLevel()),
            name="kadence-task",
            daemon=False,  # a task may start processes of its own
        )
        try:
            process.start()
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        child = _Process(process, mine)
        with self._lock:
            self._busy.add(child)
        return child

    def _checkin(self, child: _Process) -> None:
        """The call is over and the child waits for the next one."""
        with self._lock:
            self._busy.discard(child)
            if not self._closed:
                self._idle.append(child)
                return
            self._lock.notify_all()
        child.reap(self.grace)

    def _discard(self, child: _Process) -> None:
        """The child is stopped or dead: reap it, never reuse it."""
        try:
            child.reap(self.grace)
        finally:
            with self._lock:
                self._busy.discard(child)
                self._lock.notify_all()

    def shutdown(self) -> None:
        """Stop every child; blocks until they are gone (a few times the grace at most).

        Idle children exit as their pipe closes. Busy ones belong to calls that the worker has
        stopped (or will: their attempts end with the worker), which reap them; any still busy
        after twice the grace is killed.
        """
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for child in idle:
            child.conn.close()
        for child in idle:
            child.reap(self.grace)
        with self._lock:
            self._lock.wait_for(lambda: not self._busy, timeout=2 * self.grace + 1)
            left = list(self._busy)
        for child in left:
            log.warning("killing the task process %s at shutdown", child.process.pid)
            child.process.kill()


class Call:
    """One handler call in a child process: :meth:`run` in a task thread, :meth:`stop` (from
    any thread) when the attempt ends first."""

    def __init__(
        self,
        processes: TaskProcesses,
        spec: TaskSpec,
        args: list[Any],
        kwargs: dict[str, Any],
        ctx: Context,
    ) -> None:
        self._processes = processes
        self._ref = TaskRef.of(spec)
        self._args = args
        self._kwargs = kwargs
        self._ctx = ctx
        self._lock = threading.Lock()
        self._stopped_at: float | None = None
        #: Written to by :meth:`stop` to wake :meth:`run`'s thread; None once it has returned.
        self._wake: tuple[int, int] | None = None

    def stop(self) -> None:
        """The attempt is over: the child gets SIGTERM at once, and SIGKILL after the grace.

        The signals are sent by the thread in :meth:`run`, the only one that also reaps the
        child, so a signal never goes to a process id the system has handed out again.
        """
        with self._lock:
            if self._stopped_at is not None:
                return
            self._stopped_at = time.monotonic()
            if self._wake is not None:
                with contextlib.suppress(OSError):
                    os.write(self._wake[1], b"x")

    def _blob(self) -> bytes:
        ctx = self._ctx
        marker = _ContextArgument()
        call = _Call(
            args=tuple(marker if a is ctx else a for a in self._args),
            kwargs={k: marker if v is ctx else v for k, v in self._kwargs.items()},
            request=ctx.request,
            attempt=ctx.attempt,
            worker=ctx.worker,
            fencing_token=ctx.fencing_token,
            location=ctx.output.location,
        )
        try:
            return pickle.dumps(call)
        except Exception as error:
            raise Fail(
                f"task {self._ref.task!r}: its arguments cannot be pickled for the task's process "
                f"({type(error).__name__}: {error})",
                error_type="PayloadNotPicklable",
            ) from None

    def run(self) -> Any:
        """Run the call in a child and return its value (or raise its exception); blocks."""
        if self._stopped_at is not None:  # stopped while waiting for a thread
            raise Cancelled("the attempt was stopped")
        blob = self._blob()
        try:
            child = self._processes._checkout()
        except TaskProcessError:
            raise
        except Exception as error:
            raise TaskProcessError(
                f"could not start a process for task {self._ref.task!r}: "
                f"{type(error).__name__}: {error}"
            ) from error
        wake = os.pipe()
        with self._lock:
            stopped = self._stopped_at is not None
            self._wake = wake
        try:
            if stopped:  # before the child had the call: it can serve the next one
                self._processes._checkin(child)
                raise Cancelled("the attempt was stopped")
            try:
                child.conn.send((self._ref, blob))
            except (OSError, ValueError) as error:
                self._processes._discard(child)
                raise TaskProcessError(f"the task's process is gone: {error}") from error
            return self._wait(child, wake[0])
        finally:
            with self._lock:
                self._wake = None
            os.close(wake[0])
            os.close(wake[1])

    def _wait(self, child: _Process, wake: int) -> Any:
        signalled = killed = False
        while True:
            timeout: float | None = None
            stopped_at = self._stopped_at
            if stopped_at is not None and not killed:
                if not signalled:
                    child.process.terminate()  # SIGTERM: Cancelled in the handler
                    signalled = True
                timeout = stopped_at + self._processes.grace - time.monotonic()
                if timeout <= 0:
                    child.process.kill()  # it had its grace
                    killed, timeout = True, None
            # The process's sentinel too: a process the task forked may hold the pipe open.
            sentinel = child.process.sentinel
            ready = multiprocessing.connection.wait([child.conn, wake, sentinel], timeout)
            if wake in ready:
                os.read(wake, 64)
            if child.conn not in ready:
                if sentinel in ready:
                    return self._ended(child)
                continue
            try:
                message = child.conn.recv()
            except (EOFError, OSError):
                return self._ended(child)
            if message[0] == "heartbeat":
                if self._stopped_at is None:
                    with contextlib.suppress(Cancelled):
                        self._ctx.heartbeat()
                continue
            if self._stopped_at is not None:
                # The attempt ended meanwhile: the reply comes too late, and the child may have
                # had SIGTERM already; it is not reused.
                self._processes._discard(child)
                raise Cancelled("the attempt was stopped")
            self._processes._checkin(child)
            return self._reply(message[1])

    def _ended(self, child: _Process) -> Any:
        """The child exited: stopped by us, or died on its own (killed, crashed)."""
        child.process.join(self._processes.grace)
        code = child.process.exitcode
        self._processes._discard(child)
        if self._stopped_at is not None:
            raise Cancelled("the attempt was stopped; its process exited")
        raise TaskProcessError(
            f"the process of task {self._ref.task!r} exited during the call (exit code {code})"
        )

    def _reply(self, blob: bytes) -> Any:
        try:
            kind, body, objects = pickle.loads(blob)
        except Exception as error:
            raise Fail(
                f"task {self._ref.task!r}: what its process sent back cannot be unpickled in "
                f"the worker ({type(error).__name__}: {error})",
                error_type="ResultNotPicklable",
            ) from None
        for written in objects:
            self._ctx.output.record(written)
        if kind == "raised":
            raise body.rebuild() if isinstance(body, _RaisedElsewhere) else body
        return body


__all__ = ["KILL_GRACE", "Call", "TaskProcessError", "TaskProcesses", "TaskRef"]
