"""Event loops and garbage collection of Kadence's processes: `kadence.loops` and `tune_gc`."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from kadence import loops


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        pytest.param({}, uvloop.new_event_loop, id="unset-is-auto"),
        pytest.param({"KADENCE_EVENT_LOOP": "auto"}, uvloop.new_event_loop, id="auto"),
        pytest.param({"KADENCE_EVENT_LOOP": " UVLoop "}, uvloop.new_event_loop, id="uvloop"),
        pytest.param({"KADENCE_EVENT_LOOP": "asyncio"}, None, id="asyncio"),
        pytest.param({"KADENCE_EVENT_LOOP": ""}, uvloop.new_event_loop, id="empty-is-auto"),
    ],
)
def test_loop_factory(environ: dict[str, str], expected: object) -> None:
    assert loops.loop_factory(environ) is expected


def test_an_unknown_loop_is_refused_by_name() -> None:
    with pytest.raises(loops.EventLoopError, match=r"KADENCE_EVENT_LOOP must be one of .*'trio'"):
        loops.loop_factory({"KADENCE_EVENT_LOOP": "trio"})


def test_uvloop_asked_for_but_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "uvloop", None)  # import fails
    with pytest.raises(loops.EventLoopError, match="uvloop is not installed"):
        loops.loop_factory({"KADENCE_EVENT_LOOP": "uvloop"})
    assert loops.loop_factory({"KADENCE_EVENT_LOOP": "auto"}) is None


@pytest.mark.parametrize(
    ("choice", "kind"), [("auto", uvloop.Loop), ("asyncio", asyncio.BaseEventLoop)]
)
def test_run_uses_the_chosen_loop(
    monkeypatch: pytest.MonkeyPatch, choice: str, kind: type[object]
) -> None:
    monkeypatch.setenv("KADENCE_EVENT_LOOP", choice)

    async def which() -> object:
        return asyncio.get_running_loop()

    loop = loops.run(which())
    assert isinstance(loop, kind)
    assert choice == "auto" or not isinstance(loop, uvloop.Loop)


def test_run_closes_the_coroutine_on_a_bad_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KADENCE_EVENT_LOOP", "nope")

    async def never() -> None:  # pragma: no cover - must not run
        raise AssertionError

    coro = never()
    with pytest.raises(loops.EventLoopError):
        loops.run(coro)
    assert coro.cr_frame is None  # closed: no "never awaited" warning


def test_the_cli_names_a_bad_choice() -> None:
    from typer.testing import CliRunner

    from kadence.cli import cli

    result = CliRunner().invoke(
        cli, ["publish", "reports", "{}"], env={"KADENCE_EVENT_LOOP": "nope"}
    )
    assert result.exit_code == 2
    assert "KADENCE_EVENT_LOOP must be one of auto, uvloop, asyncio, got 'nope'" in result.output


def test_tune_gc_freezes_start_up_objects_and_widens_the_young_generation() -> None:
    """What the operator and the worker do once started."""
    import gc

    import kadence_operator.main  # noqa: F401 -- its start-up objects, as in the operator
    from kadence.loops import GC_THRESHOLD, tune_gc

    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_freeze_count() > 10_000  # modules, classes, the Kubernetes models
        assert gc.get_threshold() == (GC_THRESHOLD, before[1], before[2])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
