"""RayJobTrigger against a real Ray head (local processes): submission, logs, end, failures, deadlines."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from pathlib import Path

import pytest

from airflow_provider_flyray.backends.local_process import local_cluster_pids, start_local_cluster
from airflow_provider_flyray.cluster import ClusterRef
from airflow_provider_flyray.events import RayJobEvent
from airflow_provider_flyray.jobs_api import JobSubmission
from airflow_provider_flyray.naming import TaskIdentity, job_metadata_for, submission_id_for
from airflow_provider_flyray.triggers.ray_job import RayJobTrigger
from tests.support.ray_jobs import first_event, rest, run_to_event

pytestmark = pytest.mark.ray


def make_trigger(
    ref: ClusterRef, entrypoint: str, *, try_number: int = 1, key: str | None = None, **kwargs
) -> RayJobTrigger:
    identity = TaskIdentity("dag", "task", key or uuid.uuid4().hex, try_number=try_number)
    submission = JobSubmission(submission_id_for(identity), entrypoint, metadata=job_metadata_for(identity))
    kwargs.setdefault("poll_interval", 1.0)
    return RayJobTrigger(
        ray_conn_id="ray_local",
        cluster=ref.to_dict(),
        submission=submission.to_dict(),
        owner_key=identity.task_key,
        **kwargs,
    )


def jobs_with_key(ref: ClusterRef, task_key: str) -> list[dict]:
    return [
        j for j in rest(ref.address + "/api/jobs/") if (j.get("metadata") or {}).get("airflow_task_key") == task_key
    ]


@pytest.fixture
def trigger_logs(capsys):
    """The trigger's log lines (Airflow's structlog writes them to stdout outside a triggerer)."""

    def read() -> list[str]:
        return [line for line in capsys.readouterr().out.splitlines() if "[ray]" in line]

    return read


def test_job_succeeds_and_its_lines_reach_the_task_log(address_ref, trigger_logs):
    trigger = make_trigger(address_ref, "python -c \"print('line one'); print('line two')\"")
    event = run_to_event(trigger)
    assert event["status"] == "success" and event["job_status"] == "SUCCEEDED"
    assert event["driver_exit_code"] == 0
    assert "line two" in event["log_tail"]
    lines = trigger_logs()
    assert any("[ray] line one" in m for m in lines), lines
    # Each line is shown once even though the tail and the final read overlap.
    assert sum("[ray] line two " in m + " " for m in lines) == 1, lines
    assert event["dashboard_url"] == address_ref.address
    assert len(jobs_with_key(address_ref, trigger.owner_key)) == 1


def test_failed_job_reports_exit_code_and_last_lines(address_ref):
    event = run_to_event(make_trigger(address_ref, "python -c \"print('about to fail'); raise SystemExit(3)\""))
    assert event["status"] == "failed" and event["job_status"] == "FAILED"
    assert event["driver_exit_code"] == 3
    assert "about to fail" in event["log_tail"]
    assert "FAILED" in event["reason"]


def test_restarted_trigger_follows_the_same_job(address_ref):
    """A triggerer restart re-runs run() from the top: it must find the job, not submit a second one."""
    first = make_trigger(address_ref, "sleep 4; echo done")

    async def start_then_cancel() -> None:
        task = asyncio.create_task(first_event(first))
        while not jobs_with_key(address_ref, first.owner_key):
            await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(start_then_cancel())
    again = RayJobTrigger(**first.serialize()[1])
    event = run_to_event(again)
    assert event["status"] == "success"
    jobs = jobs_with_key(address_ref, first.owner_key)
    assert [j["submission_id"] for j in jobs] == [first.job.submission_id]


def test_retry_adopts_the_running_job_of_an_earlier_try(address_ref):
    key = uuid.uuid4().hex
    earlier = make_trigger(address_ref, "sleep 3; echo from-try-1", key=key, try_number=1)
    rest(address_ref.address + "/api/jobs/", "POST", earlier.job.body())
    retry = make_trigger(address_ref, "echo from-try-2", key=key, try_number=2)
    event = run_to_event(retry)
    assert event["status"] == "success"
    assert event["submission_id"] == earlier.job.submission_id
    assert "from-try-1" in event["log_tail"]
    assert len(jobs_with_key(address_ref, earlier.owner_key)) == 1


def test_retry_after_a_finished_try_submits_its_own_job(address_ref):
    key = uuid.uuid4().hex
    assert run_to_event(make_trigger(address_ref, "exit 1", key=key, try_number=1))["status"] == "failed"
    event = run_to_event(make_trigger(address_ref, "echo second", key=key, try_number=2))
    assert event["status"] == "success" and event["submission_id"].endswith("-try2")


def test_execution_deadline_stops_the_job(address_ref):
    trigger = make_trigger(address_ref, "sleep 120", deadline=time.time() + 6)
    started = time.time()
    event = run_to_event(trigger)
    assert event["status"] == "timeout" and "execution_timeout" in event["reason"]
    assert time.time() - started < 20
    deadline = time.time() + 20
    while rest(address_ref.address + f"/api/jobs/{event['submission_id']}")["status"] != "STOPPED":
        assert time.time() < deadline, "the job was not stopped"
        time.sleep(0.5)


def test_job_stopped_from_outside_is_reported_as_stopped(address_ref):
    trigger = make_trigger(address_ref, "sleep 120")

    async def scenario() -> dict:
        task = asyncio.create_task(first_event(trigger))
        while not jobs_with_key(address_ref, trigger.owner_key):
            await asyncio.sleep(0.2)
        await asyncio.sleep(2)
        rest(address_ref.address + f"/api/jobs/{trigger.job.submission_id}/stop", "POST")
        return await asyncio.wait_for(task, 60)

    event = asyncio.run(scenario())
    assert event["status"] == "stopped" and event["job_status"] == "STOPPED"


def test_trigger_never_blocks_the_event_loop(address_ref):
    """The triggerer warns when one loop step takes > 0.2 s; asyncio's debug mode measures the same."""
    slow: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "Executing" in record.getMessage():
                slow.append(record.getMessage())

    handler = Catch()
    logging.getLogger("asyncio").addHandler(handler)

    async def scenario() -> dict:
        loop = asyncio.get_running_loop()
        loop.slow_callback_duration = 0.1
        return await first_event(make_trigger(address_ref, "for i in 1 2 3; do echo tick $i; sleep 1; done"))

    try:
        event = asyncio.run(scenario(), debug=True)
    finally:
        logging.getLogger("asyncio").removeHandler(handler)
    assert event["status"] == "success"
    assert slow == []


def test_local_backend_start_run_and_stop_leave_no_process():
    """An owned local cluster: the trigger waits for its head; stopping kills even detached drivers."""
    from airflow_provider_flyray.backends.local_process import stop_local_cluster

    ref = start_local_cluster("own-head", num_cpus=1, object_store_memory=100_000_000)
    try:
        event = run_to_event(make_trigger(ref, "python -c \"print('local ok')\""))
        assert event["status"] == "success" and "local ok" in event["log_tail"]
        # A job that leaves a process in a session of its own (Ray's drivers run like that).
        rest(
            ref.address + "/api/jobs/",
            "POST",
            {"entrypoint": "setsid sleep 600 & sleep 600", "submission_id": "detached"},
        )
        deadline = time.time() + 30
        while rest(ref.address + "/api/jobs/detached")["status"] != "RUNNING":
            assert time.time() < deadline
            time.sleep(0.3)
        time.sleep(1)
        assert local_cluster_pids(ref)
    finally:
        stop_local_cluster(ref)
    assert local_cluster_pids(ref) == []


def test_local_head_that_cannot_start_fails_with_its_output():
    ref = start_local_cluster("bad-head", num_cpus=-1)  # `ray start` refuses a negative CPU count
    try:
        event = run_to_event(make_trigger(ref, "echo never"), timeout=60)
    finally:
        from airflow_provider_flyray.backends.local_process import stop_local_cluster

        stop_local_cluster(ref)
    assert event["status"] in ("failed", "error")
    # Whether it dies before or after its dashboard answered, the reason carries the head's own output.
    assert "exited" in event["reason"] and "must be nonnegative" in event["reason"], event["reason"]


def test_on_kill_stops_the_job_and_the_owned_local_cluster():
    ref = start_local_cluster("killed-head", num_cpus=1, object_store_memory=100_000_000)
    trigger = make_trigger(ref, "sleep 300")

    async def scenario() -> None:
        task = asyncio.create_task(first_event(trigger))
        deadline = time.time() + 60
        while True:
            try:
                if jobs_with_key(ref, trigger.owner_key):
                    break
            except Exception:
                pass
            assert time.time() < deadline
            await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await trigger.on_kill()

    asyncio.run(scenario())
    assert local_cluster_pids(ref) == []


@pytest.mark.parametrize("kind", ["cgroup2", "pids"])
def test_a_job_that_leaves_its_session_and_environment_is_stopped_with_the_cluster(monkeypatch, kind):
    """`setsid env -i` escapes both the process group and the environment marker; not the cgroup. Each
    mechanism is tried for real where this machine mounts it (cgroup v2; the v1 pids controller)."""
    import os
    import signal

    from airflow_provider_flyray.backends import local_cgroup
    from airflow_provider_flyray.backends.local_process import stop_local_cluster

    if kind not in local_cgroup.cgroup_mounts(Path("/proc/self/mountinfo").read_text()):
        pytest.skip(f"no {kind} hierarchy mounted here")
    monkeypatch.setattr(local_cgroup, "KINDS", (kind,))
    ref = start_local_cluster("escape-head", num_cpus=1, object_store_memory=100_000_000)
    escaped: list[int] = []
    try:
        assert ref.local_cgroup and local_cgroup.cluster_cgroup(ref.local_cgroup).kind == kind, ref
        marker = f"0.{uuid.uuid4().int % 10**8:08d}"  # `sleep 604 0.x` sleeps 604.x s: a unique command line
        job = (
            f"setsid env -i /bin/sleep 604 {marker} >/dev/null 2>&1 & "
            "python -c \"import tempfile; print('TMPDIR', tempfile.gettempdir())\""
        )
        event = run_to_event(make_trigger(ref, job))
        assert event["status"] == "success", event.get("reason", event)
        # Ray's processes (multiprocessing's pymp-* dirs among them) use the cluster's own temp dir.
        assert f"TMPDIR {ref.local_temp_dir}" in event["log_tail"], event["log_tail"]
        escaped = sleepers(marker)
        assert escaped and set(escaped) <= set(local_cluster_pids(ref))
    finally:
        stop_local_cluster(ref)
        survivors = sleepers(marker) if escaped else []
        for pid in survivors:  # never leave a process behind, even when the test fails
            os.kill(pid, signal.SIGKILL)
    assert survivors == [], "the detached process outlived the cluster"
    assert local_cluster_pids(ref) == []
    assert not Path(ref.local_cgroup).exists() and not Path(ref.local_temp_dir).exists()


def sleepers(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"604 {marker}".encode() in (entry / "cmdline").read_bytes().replace(b"\0", b" "):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def test_without_a_cgroup_the_cluster_says_so_and_keeps_the_old_rule(monkeypatch):
    from airflow_provider_flyray.backends import local_cgroup

    monkeypatch.setattr(local_cgroup, "_read", lambda path: "")  # no cgroup mount visible
    cgroup, containment = local_cgroup.create_cluster_cgroup("no-cgroup")
    assert cgroup is None and containment.startswith("no cgroup (no cgroup2 hierarchy"), containment


def test_failure_message_without_streamed_logs_shows_the_log_once(address_ref):
    """get_logs=False: Ray's message of a failed job repeats its last lines; the failure message has them once."""
    from airflow.providers.common.compat.sdk import AirflowException

    from airflow_provider_flyray import FlyteRayOperator

    marker = f"LAST-WORDS-{uuid.uuid4().hex[:6]}"
    event = run_to_event(
        make_trigger(address_ref, f"python -c \"print('{marker}'); raise SystemExit(3)\"", get_logs=False)
    )
    assert event["status"] == "failed" and marker in (event["message"] or "")
    operator = FlyteRayOperator(task_id="t", entrypoint="echo", address=address_ref.address)
    with pytest.raises(AirflowException) as info:
        operator.process_result({}, RayJobEvent.from_dict(event))  # type: ignore[arg-type]
    message = str(info.value)
    assert message.splitlines().count(marker) == 1, message  # the line it printed, once
    assert "failed with exit code 3" in message and "lines of the Ray job's log" in message


def test_startup_timeout_is_named_when_the_dashboard_is_not_up_in_time():
    from airflow_provider_flyray.backends.local_process import stop_local_cluster

    ref = start_local_cluster("slow-head", num_cpus=1, object_store_memory=100_000_000)
    now = time.time()
    try:  # a local head needs seconds before its dashboard answers: 1 s is too short
        event = run_to_event(make_trigger(ref, "echo never", startup_deadline=now + 1, timings={"deferred": now}))
    finally:
        stop_local_cluster(ref)
    assert event["status"] == "failed" and event["phase"] == "startup"
    assert event["reason"].startswith("startup_timeout (1s) reached before the Ray dashboard"), event["reason"]
    assert "raise the operator's startup_timeout" in event["reason"]


# ---- hostile output (issue 15): what Ray 2.60 really does with it, and what reaches the task log ---------
# Ray's Jobs API reads the driver log as UTF-8 text: at a byte that is not UTF-8 its tail closes and
# GET /api/jobs/{id}/logs answers 500; the trigger then reads the state API's raw driver log.

BAD_BYTES_MIDWAY = "printf 'before\\n'; sleep 1.5; printf 'mid \\377\\376 bad\\n'; sleep 1.5; printf 'after\\n'"


def own(lines: list[str]) -> list[str]:
    """The job's own lines: Ray's "Runtime env is setting up" and "Running entrypoint" lines dropped (the
    latter may come after the job's output)."""
    return [line for line in lines if "job_manager.py" not in line and not line.startswith("Running entrypoint")]


def job_lines(lines: list[str]) -> list[str]:
    """The job's own output lines from the captured task log."""
    # structlog's console line: "<time> [info     ] [ray] <text>   [<logger>] loc=..."
    shown = [
        line.split("[ray] ", 1)[1].rsplit(" [airflow_provider_flyray.", 1)[0].rstrip()
        for line in lines
        if "[ray] " in line
    ]
    return own(shown)


def test_bytes_that_are_not_utf8_reach_the_task_log_and_nothing_after_them_is_lost(address_ref, capsys):
    event = run_to_event(make_trigger(address_ref, BAD_BYTES_MIDWAY))
    out = capsys.readouterr().out
    assert event["status"] == "success"
    assert job_lines(out.splitlines()) == ["before", "mid \ufffd\ufffd bad", "after"], out
    assert own(event["log_tail"])[-3:] == ["before", "mid \ufffd\ufffd bad", "after"]
    # Read raw from the state API: no fallback was needed, so no line about one (the Jobs API fallback, a
    # 500 then the raw read with one line saying why, is in tests/unit/test_trigger_logs.py).
    assert "did not serve the raw log" not in out and "Could not read" not in out


def test_a_job_failing_after_a_bad_byte_keeps_its_last_lines(address_ref, capsys):
    event = run_to_event(make_trigger(address_ref, "printf 'x\\n\\377\\nlast1\\nlast2\\n'; exit 3"))
    out = capsys.readouterr().out
    assert event["status"] == "failed" and event["driver_exit_code"] == 3
    assert own(event["log_tail"])[-4:] == ["x", "\ufffd", "last1", "last2"]
    assert job_lines(out.splitlines())[-2:] == ["last1", "last2"], out


def test_terminal_control_sequences_are_removed_and_colour_kept(address_ref, capsys):
    entrypoint = "printf 'a\\033[2Jb\\n\\033]0;title\\007c\\n\\000nul\\033[1A\\n\\033[31mred\\033[0m\\n'"
    event = run_to_event(make_trigger(address_ref, entrypoint))
    out = capsys.readouterr().out
    assert event["status"] == "success"
    assert own(event["log_tail"])[-4:] == ["ab", "c", "nul", "\x1b[31mred\x1b[0m"]
    for raw in ("\x1b[2J", "\x1b]0;", "\x07", "\x00", "\x1b[1A"):
        assert raw not in out
    assert job_lines(out.splitlines())[-4:-1] == ["ab", "c", "nul"]


def test_a_progress_bar_rewritten_with_cr_shows_its_last_state_once(address_ref, capsys):
    # Ray 2.60's Jobs API turns each \r into \n; the trigger reads the raw driver log from the state API
    # instead, so the bar is one line in its last state (tests/integration/test_trigger_raw_log_local.py).
    event = run_to_event(make_trigger(address_ref, "printf 'p 10%%\\rp 50%%\\rp 100%%\\ndone\\n'"))
    out = capsys.readouterr().out
    assert event["status"] == "success"
    assert "\r" not in out
    assert job_lines(out.splitlines())[-2:] == ["p 100%", "done"]
    assert own(event["log_tail"])[-2:] == ["p 100%", "done"] and "p 50%" not in event["log_tail"]
