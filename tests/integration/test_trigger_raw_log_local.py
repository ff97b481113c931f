"""RayJobTrigger reading a job's raw driver log from Ray's state API, on a real local Ray head (issue 15:
``\\r`` progress bars keep their last state instead of flooding the task log).

Ray 2.60's Jobs API reads the driver log in text mode (each ``\\r`` arrives as a newline); its state API
(``/api/v0/logs/stream`` while the job runs, ``/api/v0/logs/file`` at its end) serves the raw bytes.
"""

from __future__ import annotations

import textwrap
import uuid
from datetime import datetime
from pathlib import Path

import pytest

from airflow_provider_flyray.core.dashboard import DashboardClient
from airflow_provider_flyray.errors import RayJobsApiError
from tests.integration.test_trigger_local_ray import job_lines, make_trigger, own
from tests.support.ray_jobs import run_to_event

pytestmark = pytest.mark.ray

UPDATES = 200
BAR_FINAL = f"train: 100% |{'#' * 20}| {UPDATES}/{UPDATES}"
RED = "\x1b[31mcoloured line\x1b[0m"
FALLBACK = "Ray's state API did not serve the raw log"

# A tqdm-like bar (200 redraws with \r over ~2 s, so the live stream sees it grow), normal lines before,
# between and after, one in colour, a \r\n line end, and a second bar that ends the log without a newline.
JOB = textwrap.dedent(
    f"""
    import sys, time
    print("before the bar", flush=True)
    print({RED!r}, flush=True)
    for i in range(1, {UPDATES} + 1):
        done = i * 20 // {UPDATES}
        sys.stdout.write(f"\\rtrain: {{i * 100 // {UPDATES}:3d}}% |{{'#' * done:<20}}| {{i}}/{UPDATES}")
        sys.stdout.flush()
        time.sleep(0.01)
    sys.stdout.write("\\n")
    for n in range(1, 61):
        print(f"after {{n}}", flush=True)
    sys.stdout.write("windows line\\r\\n")
    sys.stdout.write("eval 1/2\\reval 2/2\\r")
    sys.stdout.flush()
    time.sleep(1.5)  # the live stream has it all before the end
    sys.exit(int(sys.argv[1]))
    """
)
EXPECTED = ["before the bar", RED, BAR_FINAL, *(f"after {n}" for n in range(1, 61)), "windows line", "eval 2/2"]


@pytest.fixture
def progress_job(tmp_path: Path):
    """``python <script> <exit code>``: the job above (the head runs on this machine, it reads the file)."""
    script = tmp_path / f"progress_{uuid.uuid4().hex[:6]}.py"
    script.write_text(JOB)
    return lambda exit_code: f"python {script} {exit_code}"


def test_a_progress_bar_shows_its_final_state_once_and_every_other_line_in_order(address_ref, capsys, progress_job):
    event = run_to_event(make_trigger(address_ref, progress_job(0)))
    out = capsys.readouterr().out
    assert event["status"] == "success", event.get("reason", event)
    shown = job_lines(out.splitlines())
    assert shown == EXPECTED, shown  # 65 lines: the bar once, not 200 times
    assert "\r" not in out and FALLBACK not in out
    assert sum("train:" in line for line in out.splitlines()) == 1
    assert own(event["log_tail"])[-3:] == ["after 60", "windows line", "eval 2/2"]
    # Shown while the job ran (the state API's followed log), not only by the final read.
    assert shown_at(out, "after 60") < event["end_time"] / 1000, out


def shown_at(out: str, text: str) -> float:
    """When the trigger logged ``[ray] <text>``: the line starts with its time, as structlog writes it
    (``2026-12-04T04:11:51.465Z [info ...``) or Airflow 3.0's logging (``[2026-12-04T04:11:51.465+0000] {...``)."""
    line = next(line for line in out.splitlines() if f"[ray] {text} " in line or line.endswith(f"[ray] {text}"))
    stamp = line.split(" ", 1)[0].strip("[]").replace("Z", "+00:00")
    return datetime.fromisoformat(stamp).timestamp()


def test_a_failing_job_with_a_progress_bar_keeps_its_last_lines(address_ref, capsys, progress_job):
    from airflow.providers.common.compat.sdk import AirflowException

    from airflow_provider_flyray import FlyteRayOperator
    from airflow_provider_flyray.events import RayJobEvent

    event = run_to_event(make_trigger(address_ref, progress_job(3)))
    out = capsys.readouterr().out
    assert event["status"] == "failed" and event["driver_exit_code"] == 3, event
    assert job_lines(out.splitlines()) == EXPECTED
    # The failure message's block: the last 50 lines, collapsed as the task log shows them.
    assert own(event["log_tail"]) == EXPECTED[-50:]
    operator = FlyteRayOperator(task_id="t", entrypoint="echo", address=address_ref.address)
    with pytest.raises(AirflowException) as info:
        operator.process_result({}, RayJobEvent.from_dict(event))  # type: ignore[arg-type]
    message = str(info.value)
    assert "failed with exit code 3" in message and "eval 2/2" in message and "after 60" in message
    assert "eval 1/2" not in message.split("lines of the Ray job's log", 1)[-1]


def test_a_state_api_that_answers_errors_falls_back_to_the_jobs_api_with_every_line(
    address_ref, capsys, progress_job, monkeypatch
):
    """FAULT INJECTION (a mock, only here): the state API's raw log requests answer HTTP 500, as a proxy
    or an older Ray would. The real Ray head serves everything else, the Jobs API included."""

    def refused(*args, **kwargs):
        raise RayJobsApiError("followed driver log failed with HTTP 500: injected", status=500)

    monkeypatch.setattr(DashboardClient, "follow_driver_log", refused)
    monkeypatch.setattr(DashboardClient, "driver_log_bytes", refused)
    event = run_to_event(make_trigger(address_ref, progress_job(0)))
    out = capsys.readouterr().out
    assert event["status"] == "success", event.get("reason", event)
    assert out.count(FALLBACK) == 1, out  # one line says so
    shown = job_lines(out.splitlines())
    # Ray's text reads: each redraw a line of its own, all of them, in order; nothing else lost.
    bars = [line for line in shown if line.startswith("train:")]
    assert len(bars) == UPDATES and bars[-1] == BAR_FINAL
    assert [line for line in shown if not line.startswith("train:") and line] == [
        line for line in EXPECTED if line != BAR_FINAL and not line.startswith("eval")
    ] + ["eval 1/2", "eval 2/2"]


def test_when_the_final_raw_read_fails_the_jobs_api_resumes_after_the_last_line_shown(
    address_ref, capsys, progress_job, monkeypatch
):
    """FAULT INJECTION (a mock, only here): the live raw stream works, the end-of-job raw read answers
    HTTP 500. The Jobs API read resumes at the character where the raw stream stopped (after 200 \\r and
    a \\r\\n): nothing shown twice, nothing lost; the unfinished rewritten line comes as Ray's text."""

    def refused(*args, **kwargs):
        raise RayJobsApiError("driver log failed with HTTP 500: injected", status=500)

    monkeypatch.setattr(DashboardClient, "driver_log_bytes", refused)
    event = run_to_event(make_trigger(address_ref, progress_job(0)))
    out = capsys.readouterr().out
    assert event["status"] == "success", event.get("reason", event)
    assert out.count(FALLBACK) == 1, out
    assert job_lines(out.splitlines()) == [*EXPECTED[:-1], "eval 1/2", "eval 2/2"]
