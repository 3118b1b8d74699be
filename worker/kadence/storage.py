"""Run inputs and outputs in S3-compatible object storage (MinIO, SeaweedFS, AWS S3).

An attempt of a run writes its outputs under
``s3://<bucket>/<namespace>/<job>/<runId>/attempt-<n>/`` (``attempt-<n>-fence-<token>/`` when it
holds its Job's Lease; ad-hoc runs use ``_adhoc`` for the Job), never where another attempt of
the run writes, and may read one input object. :class:`S3Storage` talks to the service
through the minio client; :class:`OutputWriter` (``ctx.output``) and :class:`InputStream`
(``ctx.read_input()``) are what task code sees. Both work on any :class:`ObjectStore`, so the
in-memory store of :mod:`kadence.testing` runs the same task code in unit tests.

minio is synchronous: sync tasks call it directly from their worker thread; async tasks use the
``a``-prefixed methods, which run it in a thread so the event loop (and its heartbeats) never
blocks on a slow upload.
"""

from __future__ import annotations

import asyncio
import io
import mimetypes
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any, BinaryIO, Protocol, Self, cast

import urllib3
from minio import Minio
from minio.error import MinioException, S3Error

from kadence import constants
from kadence.config import Settings
from kadence.protocol import ObjectRef, OutputLocation, OutputObject, RunRequest

#: Unknown-length uploads are sent in parts of this size (S3's minimum is 5 MiB).
_PART_SIZE = 16 * 1024 * 1024
_CHUNK = 1024 * 1024

OutputData = bytes | bytearray | memoryview | str | os.PathLike[str] | IO[bytes]


class StorageError(RuntimeError):
    """Object storage failed or is unreachable; the attempt is retried."""


class StorageNotConfigured(StorageError):
    """The worker has no S3 endpoint (``KADENCE_S3_ENDPOINT``), so tasks cannot use storage."""


class Cancelled(RuntimeError):
    """The attempt was cancelled (timeout, lost lease, shutdown); raised into task code that
    touches the SDK afterwards, so sync tasks that cannot be interrupted stop at the next call."""


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


class ObjectStore(Protocol):
    """What Kadence needs from object storage."""

    def ensure_bucket(self, bucket: str) -> None: ...

    def put(
        self, bucket: str, key: str, *, data: IO[bytes], length: int, content_type: str
    ) -> OutputObject: ...

    def open(self, bucket: str, key: str) -> Readable: ...


def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def output_location(
    request: RunRequest,
    *,
    namespace: str,
    bucket: str,
    attempt: int,
    fencing_token: int | None = None,
) -> OutputLocation:
    """Where one attempt's outputs go: the attempt's folder
    (:func:`~kadence.constants.attempt_folder`) under the run's location, which is the request's
    ``output`` or ``<ns>/<job>/<runId>/`` in ``bucket``.

    Two attempts of a run never share a key: a stale attempt that writes late (its worker was
    frozen past the ack wait or its Lease) cannot replace the objects the run reported.
    """
    folder = constants.attempt_folder(attempt, fencing_token)
    if request.output is not None:
        run = request.output.prefix
        prefix = f"{run}{folder}" if not run or run.endswith("/") else f"{run}/{folder}"
        return OutputLocation.model_construct(bucket=request.output.bucket, prefix=prefix)
    job = request.job.name if request.job is not None else constants.ADHOC_JOB
    ns = request.job.namespace if request.job is not None else namespace
    # Built from fields the request's own validation checked: no second validation per run.
    return OutputLocation.model_construct(
        bucket=bucket, prefix=f"{ns}/{job}/{request.run_id}/{folder}"
    )


class _S3Response:
    """A minio GET response that returns its connection to the pool when closed."""

    def __init__(self, response: urllib3.BaseHTTPResponse) -> None:
        self._response = response

    def read(self, size: int = -1, /) -> bytes:
        try:
            return self._response.read(None if size < 0 else size)
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise StorageError(f"reading from S3 failed: {error}") from error

    def close(self) -> None:
        self._response.close()
        self._response.release_conn()


class S3Storage:
    """An :class:`ObjectStore` on an S3 service, through the minio client."""

    def __init__(
        self,
        *,
        endpoint: str,
        access_key: str | None,
        secret_key: str | None,
        secure: bool = True,
        region: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
    ) -> None:
        # Few, quick retries: a failed upload fails the attempt, and the attempt's own retry (with
        # the Job's backoff) is the place to wait for an outage to end, not a hidden inner loop.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            maxsize=32,
            retries=urllib3.Retry(
                total=2, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]
            ),
        )
        self.endpoint = endpoint
        #: What it was made with: how it is pickled (see :meth:`__reduce__`).
        self._options: dict[str, Any] = {
            "endpoint": endpoint,
            "access_key": access_key,
            "secret_key": secret_key,
            "secure": secure,
            "region": region,
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
        }
        self.client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=http,
        )
        self._buckets: set[str] = set()
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Storage | None:
        """The store for ``KADENCE_S3_*``, or None when no endpoint is configured."""
        if settings.s3_endpoint is None:
            return None
        secret = settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else None
        return cls(
            endpoint=settings.s3_endpoint,
            access_key=settings.s3_access_key,
            secret_key=secret,
            secure=settings.s3_secure,
            region=settings.s3_region,
        )

    def __repr__(self) -> str:
        return f"S3Storage(endpoint={self.endpoint!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as the arguments it was made with, credentials included: the worker sends its
        store to the child processes of ``isolation="process"`` tasks (:mod:`kadence.processes`),
        which make their own client, connection pool and bucket cache from them."""
        return (_s3_storage, (self._options,))

    def ensure_bucket(self, bucket: str) -> None:
        with self._lock:
            if bucket in self._buckets:
                return
        try:
            # Ask first: workers may be allowed to write objects but not to create buckets.
            if not self._bucket_exists(bucket):
                try:
                    self.client.make_bucket(bucket)
                except MinioException as error:
                    if getattr(error, "code", "") not in (
                        "BucketAlreadyOwnedByYou",
                        "BucketAlreadyExists",
                    ):
                        raise
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as error:
            raise StorageError(f"bucket {bucket!r} is not available: {error}") from error
        with self._lock:
            self._buckets.add(bucket)

    def _bucket_exists(self, bucket: str) -> bool:
        """Whether ``bucket`` exists; True when these credentials may not ask.

        Credentials limited to a key prefix (one namespace's outputs, see ``docs/security.md``)
        are refused HeadBucket: SeaweedFS counts it as a read of the whole bucket, and on AWS it
        needs ``s3:ListBucket``, which a prefix-limited policy grants only with a prefix. Such
        credentials cannot create the bucket either, so the bucket is taken as there: if it is
        not, the first write fails (NoSuchBucket) and the attempt is retried like any other
        storage error.
        """
        try:
            return self.client.bucket_exists(bucket)
        except S3Error as error:
            if error.code != "AccessDenied":
                raise
            return True

    def put(
        self, bucket: str, key: str, *, data: IO[bytes], length: int, content_type: str
    ) -> OutputObject:
        self.ensure_bucket(bucket)
        try:
            written = self.client.put_object(
                bucket,
                key,
                cast(BinaryIO, data),
                length,
                content_type=content_type,
                part_size=_PART_SIZE if length < 0 else 0,
            )
            if length < 0:
                length = self.client.stat_object(bucket, key).size or 0
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as error:
            raise StorageError(f"writing {s3_uri(bucket, key)} failed: {error}") from error
        return OutputObject(uri=s3_uri(bucket, key), size=length, etag=written.etag or "")

    def open(self, bucket: str, key: str) -> Readable:
        try:
            return _S3Response(self.client.get_object(bucket, key))
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as error:
            raise StorageError(f"reading {s3_uri(bucket, key)} failed: {error}") from error

    def stat(self, bucket: str, key: str) -> tuple[int, str]:
        """Size and ETag of an object (used by tests and the CLI)."""
        info = self.client.stat_object(bucket, key)
        return info.size or 0, info.etag or ""


def _s3_storage(options: dict[str, Any]) -> S3Storage:
    return S3Storage(**options)


def _check_name(name: str) -> str:
    parts = name.split("/")
    if not name or name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts):
        raise ValueError(
            f"output name {name!r} must be a relative path like 'report.csv' or 'charts/a.png'"
        )
    return name


def _content_type(name: str, data: OutputData, *, given: str | None) -> str:
    if given:
        return given
    guessed, _ = mimetypes.guess_type(name)
    if guessed:
        return f"{guessed}; charset=utf-8" if isinstance(data, str) else guessed
    return "text/plain; charset=utf-8" if isinstance(data, str) else "application/octet-stream"


class OutputWriter:
    """``ctx.output``: writes objects under the attempt's output prefix and remembers them.

    Every object written is reported in the attempt's result (``uri``, ``size``, ``etag``);
    writing the same name twice in one attempt keeps the last one. Each attempt has a prefix of
    its own (:func:`output_location`), so another attempt of the run never replaces them.
    """

    def __init__(
        self,
        store: ObjectStore | None,
        location: OutputLocation | Callable[[], OutputLocation],
        *,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> None:
        self._store = store
        #: The location, or the function that gives it when first needed (most tasks write
        #: nothing, and the worker builds a writer for every run).
        self._location = location
        self._cancelled = cancelled
        self._objects: dict[str, OutputObject] = {}
        self._lock = threading.Lock()

    @property
    def location(self) -> OutputLocation:
        location = self._location
        if not isinstance(location, OutputLocation):
            location = self._location = location()
        return location

    @property
    def bucket(self) -> str:
        return self.location.bucket

    @property
    def prefix(self) -> str:
        """The key prefix, ending in ``/``."""
        return self.location.prefix.rstrip("/") + "/"

    @property
    def uri(self) -> str:
        return s3_uri(self.bucket, self.prefix)

    @property
    def objects(self) -> tuple[OutputObject, ...]:
        """The objects written so far, in the order first written."""
        if not self._objects:  # most runs write nothing: no lock for them
            return ()
        with self._lock:
            return tuple(self._objects.values())

    def key(self, name: str) -> str:
        return self.prefix + _check_name(name)

    def put(self, name: str, data: OutputData, *, content_type: str | None = None) -> OutputObject:
        """Write ``data`` (bytes, str, a binary file or a path) as ``<prefix>/<name>``."""
        if self._cancelled():
            raise Cancelled("the attempt was cancelled; not writing outputs")
        if self._store is None:
            raise StorageNotConfigured(
                "no object storage: set KADENCE_S3_ENDPOINT (and credentials) to write outputs"
            )
        key = self.key(name)
        ctype = _content_type(name, data, given=content_type)
        stream, length, close = _as_stream(data)
        try:
            written = self._store.put(
                self.bucket, key, data=stream, length=length, content_type=ctype
            )
        finally:
            if close:
                stream.close()
        with self._lock:
            self._objects[written.uri] = written
        return written

    def record(self, written: OutputObject) -> None:
        """Count an object this attempt wrote through another writer: the one of its task's
        child process (``isolation="process"``), which writes to the same prefix."""
        with self._lock:
            self._objects[written.uri] = written

    async def aput(
        self, name: str, data: OutputData, *, content_type: str | None = None
    ) -> OutputObject:
        """:meth:`put` for async tasks: the upload runs in a thread."""
        return await asyncio.to_thread(self.put, name, data, content_type=content_type)


def _as_stream(data: OutputData) -> tuple[IO[bytes], int, bool]:
    """A readable binary stream, its length (-1 if unknown) and whether we opened it."""
    if isinstance(data, str):
        encoded = data.encode()
        return io.BytesIO(encoded), len(encoded), True
    if isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
        return io.BytesIO(raw), len(raw), True
    if isinstance(data, os.PathLike):
        path = Path(data)
        return path.open("rb"), path.stat().st_size, True
    try:
        if data.seekable():
            start = data.tell()
            end = data.seek(0, io.SEEK_END)
            data.seek(start)
            return data, end - start, False
    except (AttributeError, OSError):
        pass
    return data, -1, False


class InputStream:
    """``ctx.read_input()``: the run's input object, streamed.

    Sync tasks ``read()`` it or iterate over chunks; async tasks use ``async for chunk in`` or
    ``await aread()``. The object is opened on first use; close it (or use ``with``) when done.
    """

    def __init__(
        self,
        store: ObjectStore,
        ref: ObjectRef,
        *,
        chunk_size: int = _CHUNK,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> None:
        self.ref = ref
        self._store = store
        self._chunk_size = chunk_size
        self._cancelled = cancelled
        self._body: Readable | None = None

    @property
    def uri(self) -> str:
        return s3_uri(self.ref.bucket, self.ref.key)

    def _opened(self) -> Readable:
        if self._cancelled():
            raise Cancelled("the attempt was cancelled; not reading input")
        if self._body is None:
            self._body = self._store.open(self.ref.bucket, self.ref.key)
        return self._body

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            chunks: list[bytes] = []
            while chunk := self._opened().read(self._chunk_size):
                chunks.append(chunk)
            return b"".join(chunks)
        return self._opened().read(size)

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(self._chunk_size):
            yield chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while chunk := await asyncio.to_thread(self.read, self._chunk_size):
            yield chunk

    async def aread(self) -> bytes:
        return await asyncio.to_thread(self.read)

    def close(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            body.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.close)
