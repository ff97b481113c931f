"""A function job's result, read back from its log (pure): the frames of
:mod:`~airflow_provider_flyray.function_driver`, and what they make of the task's outcome.

Only text that starts with this submission's marker is a frame; they are taken out of the log before it
is shown, so the task log and the failure message's last lines never show them. Memory stays bounded:
frames beyond the largest result the driver sends are refused.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from airflow_provider_flyray.events import Outcome
from airflow_provider_flyray.function_driver import FRAME_CHARS, FRAME_PREFIX, MAX_RESULT_BYTES, RESULT_PROBLEM_PREFIX

# A traceback or an error message can be long too: room for the largest result plus that, in base64.
MAX_FRAMES = math.ceil((MAX_RESULT_BYTES + 256 * 1024) * 4 / 3 / FRAME_CHARS) + 1


class ResultFrames:
    """Collects the frames of one submission (by its marker) out of the job's log lines."""

    def __init__(self, marker: str) -> None:
        self.prefix = f"{FRAME_PREFIX}{marker}:"
        self._pieces: dict[int, str] = {}
        self._count: int | None = None
        self.record: dict[str, Any] | None = None
        self.problem: str | None = None

    @property
    def complete(self) -> bool:
        return self.record is not None

    def take(self, lines: Iterable[str]) -> list[str]:
        """The lines that are not frames (they are shown); frames are kept."""
        shown = []
        for line in lines:
            # Mid-line too: a function whose last print had no newline puts the frame after its text.
            at = line.find(self.prefix)
            if at < 0:
                shown.append(line)
                continue
            if at > 0:
                shown.append(line[:at])
            self._frame(line[at + len(self.prefix) :])
        return shown

    def _frame(self, text: str) -> None:
        if self.record is not None or self.problem is not None:
            return
        position, _, piece = text.partition(":")
        index_text, _, count_text = position.partition("/")
        if not (index_text.isdigit() and count_text.isdigit()):
            self.problem = f"a result frame is malformed ({text[:40]!r})"
            return
        index, count = int(index_text), int(count_text)
        if count > MAX_FRAMES or not 1 <= index <= count or self._count not in (None, count):
            self.problem = f"result frame {index}/{count} does not fit the others"
            return
        self._count = count
        self._pieces[index] = piece
        if len(self._pieces) == count:
            try:
                joined = "".join(self._pieces[i] for i in range(1, count + 1))
                record = json.loads(base64.b64decode(joined, validate=True))
            except (binascii.Error, ValueError) as exc:
                self.problem = f"the result frames do not decode ({exc})"
                return
            if not isinstance(record, dict) or record.get("kind") not in ("return", "error"):
                self.problem = "the result record is not one the driver writes"
                return
            self._pieces.clear()
            self.record = record


@dataclass(frozen=True)
class FunctionVerdict:
    outcome: Outcome
    reason: str
    log_tail: list[str]
    result: Any = None


def without_trailing(lines: list[str], text: str) -> list[str]:
    """``lines`` without a last block equal to ``text``'s lines (the traceback is in the reason already)."""
    block = text.rstrip("\n").splitlines()
    if block and len(lines) >= len(block) and lines[-len(block) :] == block:
        return lines[: -len(block)]
    return lines


def function_verdict(
    frames: ResultFrames, outcome: Outcome, reason: str, log_tail: list[str], submission_id: str
) -> FunctionVerdict:
    """What a function job's frames make of the outcome Ray reported: the return value on success, the
    function's exception (type, message, remote traceback) on failure."""
    record = frames.record
    if record is None:
        if outcome is Outcome.SUCCESS:
            why = frames.problem or "no result frame in its log (was the log readable?)"
            return FunctionVerdict(
                Outcome.ERROR,
                f"Ray job {submission_id} succeeded but its result did not reach Airflow: {why}",
                log_tail,
            )
        return FunctionVerdict(outcome, reason, log_tail)
    if record["kind"] == "return":
        if outcome is Outcome.SUCCESS:
            return FunctionVerdict(outcome, reason, log_tail, record.get("value"))
        return FunctionVerdict(outcome, reason, log_tail)  # e.g. stopped after returning: Ray's word stands
    if record.get("where") == "result":  # the function returned, but a value that cannot reach XCom
        message = str(record.get("message"))
        tail = without_trailing(log_tail, RESULT_PROBLEM_PREFIX + message)
        return FunctionVerdict(Outcome.FAILED, f"Ray job {submission_id} failed: {message}", tail)
    traceback = str(record.get("traceback") or "")
    detail = f"{record.get('type')}: {record.get('message')}"
    text = f"Ray job {submission_id} failed: the function raised {detail}"
    if traceback:
        text += f"\n--- remote traceback ---\n{traceback.rstrip()}"
    failed = outcome if outcome is not Outcome.SUCCESS else Outcome.FAILED
    return FunctionVerdict(failed, text, without_trailing(log_tail, traceback) if traceback else log_tail)
