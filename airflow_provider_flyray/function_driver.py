"""The driver of a ``@task.ray`` job: runs on the Ray cluster, calls the function, frames its result.

This module is shipped as text (the ``FLYRAY_DRIVER`` environment variable of the job) and executed by
the job's entrypoint, so it imports only the standard library: the cluster does not have this provider
installed. The Airflow side imports it too, for the frame format and the JSON check: one implementation
of each for both ends.

The call (the function's source and its JSON arguments) arrives in ``FLYRAY_CALL``. The Jobs API has no
file channel back, so the outcome travels in the job's log as frame lines::

    ##flyray:<marker>:<index>/<count>:<base64 piece of the JSON record>

The marker is random per submission and is removed from the environment before the function runs, so
nothing the function prints (or a subprocess it starts) can forge a frame. The record is
``{"kind": "return", "value": ...}`` or ``{"kind": "error", "type", "message", "traceback"}``; frames are
the driver's last output (Airflow notices the job's end by them, without waiting for the log to close).
"""

from __future__ import annotations

import base64
import json
import linecache
import os
import sys
import traceback
from collections.abc import MutableMapping
from typing import Any

DRIVER_ENV = "FLYRAY_DRIVER"
CALL_ENV = "FLYRAY_CALL"
MARKER_ENV = "FLYRAY_RESULT_MARKER"
FRAME_PREFIX = "##flyray:"
# Characters of base64 per frame line: well under the task log's longest line (log_text.MAX_LINE_CHARS)
# and under a pipe's atomic write, so a frame is never split or interleaved with other output.
FRAME_CHARS = 3000
# The largest result, as JSON: it crosses the triggerer, the metadata DB (the trigger event) and XCom.
MAX_RESULT_BYTES = 1024 * 1024
RESULT_PROBLEM_PREFIX = "flyray: "
# Exit code of a driver whose function raised.
FAILED_EXIT = 1


def first_non_json(value: Any, path: str) -> str | None:
    """Where ``value`` stops being JSON (``"result['rows'][2] (set)"``), or None when it is JSON: plain
    dicts with string keys, lists, tuples (sent as lists), strings, numbers, booleans and None."""
    if value is None or isinstance(value, str | bool | int | float):
        return None
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            if (found := first_non_json(item, f"{path}[{index}]")) is not None:
                return found
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path} (a key of type {type(key).__name__}: JSON keys are strings)"
            if (found := first_non_json(item, f"{path}[{key!r}]")) is not None:
                return found
        return None
    return f"{path} ({type(value).__module__}.{type(value).__qualname__})".replace("builtins.", "")


def json_bytes(value: Any) -> bytes:
    """Compact UTF-8 JSON (what a result's size limit counts); escaped ASCII for a string holding a lone
    surrogate, which UTF-8 cannot carry."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":")).encode("ascii")


def frame_lines(marker: str, record: dict[str, Any]) -> list[str]:
    """The log lines that carry ``record``."""
    encoded = base64.b64encode(json_bytes(record)).decode("ascii")
    pieces = [encoded[at : at + FRAME_CHARS] for at in range(0, len(encoded), FRAME_CHARS)] or [""]
    return [f"{FRAME_PREFIX}{marker}:{index}/{len(pieces)}:{piece}" for index, piece in enumerate(pieces, 1)]


def _load_function(call: dict[str, Any]) -> Any:
    """Compile the source under the DAG file's name and line numbers, so a remote traceback points at
    the DAG file; its lines go to linecache, since the file is not on the cluster."""
    source, filename, first_line = call["source"], call["filename"], int(call["first_line"])
    padded = "\n" * (first_line - 1) + source
    linecache.cache[filename] = (len(padded), None, padded.splitlines(keepends=True), filename)
    # "__main__": Ray's cloudpickle sends what the function defines by value, not as an import of a
    # module the workers do not have. Compiled under this module's `annotations` future, so annotations
    # naming types that exist only on the Airflow side are never evaluated.
    namespace: dict[str, Any] = {"__name__": "__main__", "__file__": filename}
    exec(compile(padded, filename, "exec"), namespace)
    return namespace[call["name"]]


def _error_record(exc: BaseException, skip_frames: int) -> dict[str, Any]:
    kind = type(exc)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    frames = traceback.extract_tb(exc.__traceback__)[skip_frames:]
    text = "Traceback (most recent call last):\n" + "".join(traceback.format_list(frames))
    text += "".join(traceback.format_exception_only(kind, exc))
    return {"kind": "error", "type": name, "message": str(exc), "traceback": text}


def _emit(marker: str, record: dict[str, Any]) -> None:
    sys.stderr.flush()
    sys.stdout.flush()
    sys.stdout.write("\n".join(frame_lines(marker, record)) + "\n")
    sys.stdout.flush()


def run(environ: MutableMapping[str, str] = os.environ) -> int:
    """Call the function of ``FLYRAY_CALL`` and frame its outcome; the driver's exit code."""
    marker = environ.pop(MARKER_ENV)
    call = json.loads(environ.pop(CALL_ENV))
    environ.pop(DRIVER_ENV, None)
    try:
        function = _load_function(call)
    except BaseException as exc:
        record = _error_record(exc, 2)  # without the driver's own two frames
        sys.stderr.write(record["traceback"])
        _emit(marker, record)
        return FAILED_EXIT
    try:
        value = function(*call["args"], **call["kwargs"])
    except BaseException as exc:  # SystemExit and KeyboardInterrupt too: the task must say what ended it
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            value = None
        else:
            # The traceback goes to the job's log (the Ray dashboard shows it), without this driver's frame.
            record = _error_record(exc, 1)
            sys.stderr.write(record["traceback"])
            _emit(marker, record)
            return FAILED_EXIT
    problem = first_non_json(value, "result")
    size = 0 if problem else len(json_bytes(value))
    if problem or size > MAX_RESULT_BYTES:
        why = (
            f"the function's {problem} is not JSON-serialisable: return dicts, lists, strings, numbers, "
            "booleans or None (store anything else and return its path)"
            if problem
            else f"the function's result is {size} bytes of JSON; at most {MAX_RESULT_BYTES} cross to XCom: "
            "store it (e.g. object storage) and return its path"
        )
        sys.stderr.write(f"{RESULT_PROBLEM_PREFIX}{why}\n")
        _emit(
            marker,
            {"kind": "error", "where": "result", "type": "TypeError" if problem else "ValueError", "message": why},
        )
        return FAILED_EXIT
    _emit(marker, {"kind": "return", "value": value})
    return 0


if __name__ == "__main__":  # the entrypoint execs this module's text as __main__
    sys.exit(run())
