"""``@task.ray``'s pure parts, without Ray or Airflow runs: the shipped source, the JSON checks of the
arguments, the job's env, the driver run in this process, the result frames and what they make of the
task's outcome. The driver's ``run()`` is the real one (its ``environ`` is a dict here); no mocks."""

from __future__ import annotations

import datetime
import inspect
import json
import linecache
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import task

from airflow_provider_flyray.errors import ConfigError
from airflow_provider_flyray.events import Outcome
from airflow_provider_flyray.function_call import (
    MAX_CALL_BYTES,
    call_json,
    check_arguments,
    function_source,
    job_env_vars,
    new_marker,
    result_marker_of,
    with_env_vars,
)
from airflow_provider_flyray.function_driver import (
    CALL_ENV,
    DRIVER_ENV,
    FAILED_EXIT,
    FRAME_CHARS,
    FRAME_PREFIX,
    MARKER_ENV,
    MAX_RESULT_BYTES,
    RESULT_PROBLEM_PREFIX,
    first_non_json,
    frame_lines,
    run,
)
from airflow_provider_flyray.results import MAX_FRAMES, ResultFrames, function_verdict, without_trailing

THIS_FILE = str(Path(__file__).resolve())


# ---- functions to ship (module level, as in a DAG file) ------------------------------------------------


def plain(decorated: Any) -> Any:
    return decorated


def with_options(*_: Any, **__: Any) -> Any:
    return plain


@plain
@with_options(
    "spans",
    lines=2,
)
@plain
def stacked(x: int) -> int:
    return x + 1


@task.ray(
    ray_conn_id="ray_local",
    poll_interval=1,
)
def decorated_task(n: int) -> list[int]:
    return [i * i for i in range(n)]


def raises_value_error(n: int) -> None:
    helper_value = n * 2
    raise ValueError(f"bad n {helper_value}")


def def_line(name: str) -> int:
    """The line of ``def name(`` in this file (what a remote traceback must point at)."""
    lines = Path(__file__).read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if line.lstrip().startswith(f"def {name}("))


# ---- source extraction --------------------------------------------------------------------------------


def test_source_strips_every_decorator_and_keeps_the_def_line():
    source = function_source(stacked)
    assert source.text.startswith("def stacked(x: int) -> int:\n")
    assert "@" not in source.text
    assert source.name == "stacked" and source.filename == THIS_FILE
    assert source.first_line == def_line("stacked")


def test_source_of_a_task_ray_function_strips_the_multiline_decorator():
    source = function_source(decorated_task.function)  # type: ignore[attr-defined]
    assert source.text.splitlines()[0] == "def decorated_task(n: int) -> list[int]:"
    assert "task.ray" not in source.text and "ray_conn_id" not in source.text
    assert source.first_line == def_line("decorated_task")


def test_source_of_a_nested_function_is_dedented():
    @plain
    def nested(a: int, b: int = 2) -> int:
        total = a + b
        return total

    source = function_source(nested)
    assert source.text.startswith("def nested(")
    assert "    total = a + b\n" in source.text  # the body keeps its own indentation
    compile(source.text, "x", "exec")
    assert source.first_line == inspect.getsourcelines(nested)[1] + 1  # one decorator line above


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: lambda x: x, "lambda"),
        (lambda: async_function, "async def"),
        (lambda: closure(), "enclosing function (offset)"),
    ],
    ids=["lambda", "async", "closure"],
)
def test_functions_that_cannot_run_alone_are_refused(make, words):
    with pytest.raises(ConfigError) as caught:
        function_source(make())
    assert caught.value.field == "python_callable"
    assert words in str(caught.value) and str(caught.value).startswith("python_callable: ")


async def async_function() -> int:
    return 1


def closure() -> Any:
    offset = 3

    def adds(x: int) -> int:
        return x + offset

    return adds


def test_a_function_without_readable_source_is_refused():
    namespace: dict[str, Any] = {}
    exec(compile("def made_up():\n    return 1\n", "<made up>", "exec"), namespace)
    with pytest.raises(ConfigError, match=r"^python_callable: the source of made_up cannot be read"):
        function_source(namespace["made_up"])


def test_the_decorator_refuses_a_lambda_when_the_dag_is_parsed():
    with pytest.raises(ConfigError, match="python_callable: a lambda"):
        task.ray(ray_conn_id="ray_local")(lambda: 1)()  # type: ignore[attr-defined]


# ---- arguments --------------------------------------------------------------------------------------


def two(a: Any, b: Any = None, *rest: Any, **kw: Any) -> None:
    pass


class Thing:
    pass


@pytest.mark.parametrize(
    ("args", "kwargs", "field", "words"),
    [
        ([datetime.datetime(2026, 1, 1)], {}, "op_args[0]", "argument 'a' (datetime.datetime)"),
        ([1, {1, 2}], {}, "op_args[1]", "argument 'b' (set)"),
        ([1, 2, Thing()], {}, "op_args[2]", f"positional argument 2 ({__name__}.Thing)"),
        (
            [1],
            {"x": {"when": [1, datetime.date(2026, 1, 1)]}},
            "op_kwargs['x']",
            "argument 'x'['when'][1] (datetime.date)",
        ),
        ([1], {"x": {1: "one"}}, "op_kwargs['x']", "argument 'x' (a key of type int: JSON keys are strings)"),
        ([1], {"x": b"bytes"}, "op_kwargs['x']", "argument 'x' (bytes)"),
    ],
    ids=["datetime", "set", "object", "nested-date", "int-key", "bytes"],
)
def test_non_json_arguments_are_refused_naming_the_argument_and_its_type(args, kwargs, field, words):
    with pytest.raises(ConfigError) as caught:
        check_arguments(two, args, kwargs)
    assert caught.value.field == field
    assert words in caught.value.problem and "cannot be sent to the Ray job as JSON" in caught.value.problem


def test_json_arguments_pass_and_tuples_travel_as_lists():
    args, kwargs = [1, "s", None, True, 1.5, (1, 2)], {"x": {"k": [{"n": None}]}}
    check_arguments(two, args, kwargs)
    call = json.loads(call_json(function_source(stacked), args, kwargs))
    assert call["args"] == [1, "s", None, True, 1.5, [1, 2]] and call["kwargs"] == kwargs
    assert call["name"] == "stacked" and call["first_line"] == def_line("stacked")


def test_source_and_arguments_over_the_environment_limit_are_refused():
    source = function_source(stacked)
    call_json(source, ["x" * (MAX_CALL_BYTES - 2000)], {})
    with pytest.raises(ConfigError) as caught:
        call_json(source, ["x" * MAX_CALL_BYTES], {})
    assert caught.value.field == "op_args/op_kwargs"
    assert f"at most {MAX_CALL_BYTES}" in caught.value.problem and "by reference" in caught.value.problem


@pytest.mark.parametrize(
    ("value", "found"),
    [
        ({"rows": [1, 2, {3}]}, "result['rows'][2] (set)"),
        ([{"a": object()}], "result[0]['a'] (object)"),
        ({"a": {"b": (1, complex(1, 2))}}, "result['a']['b'][1] (complex)"),
        ({None: 1}, "result (a key of type NoneType: JSON keys are strings)"),
        ({"ok": [1, "two", None, 3.0, False, (4,)]}, None),
    ],
)
def test_first_non_json_names_the_path(value, found):
    assert first_non_json(value, "result") == found


# ---- the job's env ----------------------------------------------------------------------------------


def test_env_vars_are_added_to_the_users_and_a_clash_is_refused():
    extra = job_env_vars("{}", "m" * 32)
    env = with_env_vars({"pip": ["x"], "env_vars": {"MINE": "1"}}, extra)
    assert env["pip"] == ["x"] and env["env_vars"]["MINE"] == "1"
    assert set(env["env_vars"]) == {"MINE", DRIVER_ENV, CALL_ENV, MARKER_ENV}
    assert result_marker_of(env) == "m" * 32
    assert with_env_vars(None, extra)["env_vars"] == extra
    with pytest.raises(ConfigError) as caught:
        with_env_vars({"env_vars": {MARKER_ENV: "mine", "OTHER": "x"}}, extra)
    assert caught.value.field == "runtime_env.env_vars" and MARKER_ENV in caught.value.problem


def test_markers_are_random_and_absent_markers_are_none():
    assert new_marker() != new_marker() and len(new_marker()) == 32
    assert result_marker_of(None) is None and result_marker_of({"env_vars": {"A": "1"}}) is None
    assert result_marker_of({"env_vars": {MARKER_ENV: ""}}) is None


# ---- the driver, run in this process --------------------------------------------------------------------


def run_driver(function: Any, capsys: pytest.CaptureFixture[str], *args: Any, **kwargs: Any):
    """``function_driver.run`` on the env @task.ray gives the job; its exit code, the shown lines, the
    stderr text, the frames collected from stdout, and the env left to the function."""
    marker = new_marker()
    environ = job_env_vars(call_json(function_source(function), args, kwargs), marker)
    capsys.readouterr()
    # The driver puts the shipped source in linecache under the DAG file's name (on the cluster the file
    # is not there); in this process that file is this one: restore its real lines after.
    saved = linecache.cache.pop(THIS_FILE, None)
    try:
        code = run(environ)
    finally:
        linecache.cache.pop(THIS_FILE, None)
        if saved is not None:
            linecache.cache[THIS_FILE] = saved
    out, err = capsys.readouterr()
    frames = ResultFrames(marker)
    shown = frames.take(out.splitlines())
    return code, shown, err, frames, environ


def prints_and_returns(n: int, label: str = "x") -> dict[str, Any]:
    import os

    print("working on", n)
    return {
        "label": label,
        "squares": [i * i for i in range(n)],
        "marker_visible": "FLYRAY_RESULT_MARKER" in os.environ,
    }


def test_driver_returns_the_value_in_frames_and_hides_its_env(capsys):
    code, shown, err, frames, environ = run_driver(prints_and_returns, capsys, 4, label="y")
    assert code == 0 and err == ""
    assert shown == ["working on 4"]
    assert frames.record == {
        "kind": "return",
        "value": {"label": "y", "squares": [0, 1, 4, 9], "marker_visible": False},
    }
    assert environ == {}  # marker, call and driver text are removed before the function runs


def test_driver_reports_an_exception_with_the_functions_frames_only(capsys):
    code, shown, err, frames, _ = run_driver(raises_value_error, capsys, 21)
    assert code == FAILED_EXIT
    record = frames.record
    assert record is not None and record["kind"] == "error"
    assert (record["type"], record["message"]) == ("ValueError", "bad n 42")
    tb = record["traceback"]
    assert tb.startswith("Traceback (most recent call last):\n") and tb.endswith("ValueError: bad n 42\n")
    # The DAG file's path and the line of the raise, with its text (from linecache: not read from disk there).
    raise_line = def_line("raises_value_error") + 2
    assert f'File "{THIS_FILE}", line {raise_line}, in raises_value_error' in tb
    assert 'raise ValueError(f"bad n {helper_value}")' in tb
    assert "function_driver" not in tb and "flyray_driver" not in tb and tb.count('File "') == 1
    assert err == tb  # the job's own log (the Ray dashboard) has it too
    assert shown == []


def returns_a_set() -> Any:
    return {"rows": [1, {2, 3}]}


def returns_too_much() -> str:
    return "x" * (1024 * 1024 + 1)


def exits_zero() -> None:
    print("leaving early")
    raise SystemExit(0)


def exits_three() -> None:
    raise SystemExit(3)


def test_driver_refuses_a_non_json_result_naming_its_type(capsys):
    code, _, err, frames, _ = run_driver(returns_a_set, capsys)
    assert code == FAILED_EXIT
    assert frames.record is not None and frames.record["where"] == "result" and frames.record["type"] == "TypeError"
    assert "result['rows'][1] (set) is not JSON-serialisable" in frames.record["message"]
    assert err == RESULT_PROBLEM_PREFIX + frames.record["message"] + "\n"


def test_driver_refuses_a_result_over_the_limit(capsys):
    code, _, _, frames, _ = run_driver(returns_too_much, capsys)
    assert code == FAILED_EXIT
    assert frames.record is not None and frames.record["type"] == "ValueError"
    assert f"at most {MAX_RESULT_BYTES} cross to XCom" in frames.record["message"]


def returns_accented_text() -> str:
    return "\u00e9" * 400_000  # 800 KB of UTF-8, 2.4 MB as escaped ASCII JSON


def returns_a_lone_surrogate() -> list[str]:
    return ["a\ud800b"]


def test_driver_counts_the_limit_in_utf8_bytes_and_carries_any_string(capsys):
    code, _, _, frames, _ = run_driver(returns_accented_text, capsys)
    assert code == 0 and frames.record == {"kind": "return", "value": "\u00e9" * 400_000}
    code, _, _, frames, _ = run_driver(returns_a_lone_surrogate, capsys)
    assert code == 0 and frames.record == {"kind": "return", "value": ["a\ud800b"]}


def test_driver_system_exit_zero_returns_none_and_other_codes_fail(capsys):
    code, shown, _, frames, _ = run_driver(exits_zero, capsys)
    assert (code, shown, frames.record) == (0, ["leaving early"], {"kind": "return", "value": None})
    code, _, _, frames, _ = run_driver(exits_three, capsys)
    assert code == FAILED_EXIT and frames.record is not None and frames.record["type"] == "SystemExit"
    assert frames.record["message"] == "3"


def test_driver_reports_a_function_that_does_not_load(capsys):
    marker = new_marker()
    call = {"name": "f", "source": "def f(:\n", "filename": "/dags/x.py", "first_line": 7, "args": [], "kwargs": {}}
    code = run({MARKER_ENV: marker, CALL_ENV: json.dumps(call)})
    out, _ = capsys.readouterr()
    frames = ResultFrames(marker)
    frames.take(out.splitlines())
    assert code == FAILED_EXIT and frames.record is not None and frames.record["type"] == "SyntaxError"
    assert "/dags/x.py" in frames.record["traceback"] and "line 7" in frames.record["traceback"]


def test_driver_text_runs_under_the_entrypoint_with_stdlib_only(tmp_path):
    """The driver as the job runs it: its text from the env, exec'd by a fresh interpreter (-I: no
    site-packages, so no provider and no Airflow)."""
    import subprocess

    marker = new_marker()
    env = job_env_vars(call_json(function_source(prints_and_returns), [3], {}), marker)
    code = f"import os; exec(compile(os.environ['{DRIVER_ENV}'], 'flyray_driver.py', 'exec'))"
    done = subprocess.run(
        [sys.executable, "-I", "-c", code], env=env, capture_output=True, text=True, timeout=30, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    frames = ResultFrames(marker)
    assert frames.take(done.stdout.splitlines()) == ["working on 3"]
    assert frames.record is not None and frames.record["value"]["squares"] == [0, 1, 4]


# ---- result frames --------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 10, MAX_RESULT_BYTES - 100], ids=["empty", "small", "1MiB"])
def test_frames_round_trip(size):
    marker = new_marker()
    record = {"kind": "return", "value": ["é\u2603\U0001f600", "x" * size]}
    lines = frame_lines(marker, record)
    assert all(len(line) <= len(FRAME_PREFIX) + 32 + 20 + FRAME_CHARS for line in lines)
    if size > 1024 * 1024 // 2:
        assert 300 < len(lines) <= MAX_FRAMES
    frames = ResultFrames(marker)
    assert frames.take(lines) == [] and frames.complete and frames.record == record


def test_frames_split_across_takes_after_text_on_the_same_line():
    marker = new_marker()
    record = {"kind": "return", "value": list(range(3000))}
    lines = frame_lines(marker, record)
    assert len(lines) > 3
    frames = ResultFrames(marker)
    # A last print without a newline: the first frame follows its text on the same line.
    assert frames.take(["before", "no newline" + lines[0]]) == ["before", "no newline"]
    assert not frames.complete
    assert frames.take(lines[1:2]) == [] and not frames.complete
    assert frames.take(lines[2:]) == [] and frames.record == record


def test_frames_of_another_marker_are_shown_as_normal_lines():
    marker, other = new_marker(), new_marker()
    forged = frame_lines(other, {"kind": "return", "value": "forged"})
    fake = f"{FRAME_PREFIX}not-even-hex:1/1:e30="
    frames = ResultFrames(marker)
    assert frames.take([*forged, fake, "##flyray:"]) == [*forged, fake, "##flyray:"]
    assert not frames.complete and frames.problem is None
    real = {"kind": "return", "value": "real"}
    assert frames.take(frame_lines(marker, real)) == [] and frames.record == real


@pytest.mark.parametrize(
    ("tail", "problem"),
    [
        ("x/1:e30=", "malformed"),
        ("1:e30=", "malformed"),
        ("0/1:e30=", "does not fit"),
        ("2/1:e30=", "does not fit"),
        (f"1/{MAX_FRAMES + 1}:e30=", "does not fit"),
        ("1/1:not base64!", "do not decode"),
        ("1/1:" + "bm90IGpzb24=", "do not decode"),  # "not json"
        ("1/1:" + "WzFd", "not one the driver writes"),  # [1]
        ("1/1:" + "eyJraW5kIjoib3RoZXIifQ==", "not one the driver writes"),  # {"kind":"other"}
    ],
)
def test_malformed_frames_are_a_problem_not_a_result(tail, problem):
    marker = new_marker()
    frames = ResultFrames(marker)
    assert frames.take([f"{FRAME_PREFIX}{marker}:{tail}"]) == []
    assert not frames.complete and frames.problem is not None and problem in frames.problem
    # Once there is a problem, later frames change nothing.
    frames.take(frame_lines(marker, {"kind": "return", "value": 1}))
    assert not frames.complete


def test_frames_with_counts_that_disagree_are_a_problem():
    marker = new_marker()
    frames = ResultFrames(marker)
    frames.take([f"{FRAME_PREFIX}{marker}:1/3:abcd", f"{FRAME_PREFIX}{marker}:2/4:abcd"])
    assert frames.problem == "result frame 2/4 does not fit the others"


def test_duplicate_frames_change_nothing():
    marker = new_marker()
    record = {"kind": "return", "value": "v" * 5000}
    lines = frame_lines(marker, record)
    frames = ResultFrames(marker)
    frames.take([lines[0], lines[0]])
    assert not frames.complete and frames.problem is None
    frames.take(lines)
    assert frames.record == record
    # A re-read log (a re-opened tail) replays them: the record stays, the lines stay hidden.
    assert frames.take([*lines, "after"]) == ["after"] and frames.record == record


# ---- what the frames make of the outcome -----------------------------------------------------------------


def frames_with(record: dict[str, Any] | None, problem: str | None = None) -> ResultFrames:
    marker = new_marker()
    frames = ResultFrames(marker)
    if record is not None:
        frames.take(frame_lines(marker, record))
    frames.problem = problem
    return frames


SID = "flyray-sid"
TB = textwrap.dedent(
    """\
    Traceback (most recent call last):
      File "/dags/d.py", line 12, in f
        raise KeyError("k")
    KeyError: 'k'
    """
)


def test_verdict_success_carries_the_value():
    verdict = function_verdict(frames_with({"kind": "return", "value": [1]}), Outcome.SUCCESS, "", ["a"], SID)
    assert (verdict.outcome, verdict.result, verdict.log_tail) == (Outcome.SUCCESS, [1], ["a"])


def test_verdict_success_without_frames_is_an_error():
    verdict = function_verdict(frames_with(None), Outcome.SUCCESS, "", [], SID)
    assert verdict.outcome is Outcome.ERROR and "no result frame in its log" in verdict.reason
    verdict = function_verdict(frames_with(None, "a result frame is malformed ('x')"), Outcome.SUCCESS, "", [], SID)
    assert verdict.outcome is Outcome.ERROR and verdict.reason.endswith("a result frame is malformed ('x')")


def test_verdict_without_frames_keeps_rays_word_on_failure():
    verdict = function_verdict(frames_with(None), Outcome.STOPPED, "Ray job x STOPPED", ["l"], SID)
    assert (verdict.outcome, verdict.reason, verdict.log_tail, verdict.result) == (
        Outcome.STOPPED,
        "Ray job x STOPPED",
        ["l"],
        None,
    )


def test_verdict_a_return_then_stopped_is_stopped_without_a_value():
    verdict = function_verdict(frames_with({"kind": "return", "value": 1}), Outcome.STOPPED, "stopped", [], SID)
    assert verdict.outcome is Outcome.STOPPED and verdict.result is None


def test_verdict_exception_has_type_message_traceback_once():
    record = {"kind": "error", "type": "KeyError", "message": "'k'", "traceback": TB}
    tail = ["printed before", *TB.rstrip("\n").splitlines()]
    verdict = function_verdict(frames_with(record), Outcome.FAILED, "Ray job FAILED: ...", tail, SID)
    assert verdict.outcome is Outcome.FAILED
    assert verdict.reason.startswith(
        f"Ray job {SID} failed: the function raised KeyError: 'k'\n--- remote traceback ---\n"
    )
    assert verdict.reason.endswith(TB.rstrip())
    assert verdict.log_tail == ["printed before"]  # not shown twice
    # Ray says SUCCEEDED but the driver framed an exception (cannot happen with the driver's exit code): failed.
    assert function_verdict(frames_with(record), Outcome.SUCCESS, "", [], SID).outcome is Outcome.FAILED


def test_verdict_bad_result_names_it_and_drops_the_repeated_line():
    message = "the function's result (set) is not JSON-serialisable: ..."
    record = {"kind": "error", "where": "result", "type": "TypeError", "message": message}
    tail = ["x", RESULT_PROBLEM_PREFIX + message]
    verdict = function_verdict(frames_with(record), Outcome.FAILED, "", tail, SID)
    assert verdict.outcome is Outcome.FAILED and verdict.reason == f"Ray job {SID} failed: {message}"
    assert verdict.log_tail == ["x"]


def test_without_trailing_only_drops_an_exact_last_block():
    assert without_trailing(["a", "b", "c"], "b\nc\n") == ["a"]
    assert without_trailing(["a", "b", "c", "d"], "b\nc\n") == ["a", "b", "c", "d"]
    assert without_trailing(["c"], "b\nc\n") == ["c"]
    assert without_trailing(["a"], "") == ["a"]
