"""RayJobTrigger and hostile job output, against the recorded Ray 2.60 double (issue 15).

The double does what a real Ray 2.60 head does (see tests/integration/test_trigger_local_ray.py, which
checks the same cases on real Ray): its tail closes at a byte that is not UTF-8, ``GET .../logs`` answers
500 for such a log, the state API serves the raw driver log, and text-mode reads turn ``\\r`` into ``\\n``.
"""

from __future__ import annotations

import asyncio
import logging
import math

from airflow_provider_flyray.log_text import MAX_LINE_CHARS
from tests.support.recorded_ray import raw
from tests.support.trigger_double import (
    first_event,
    make_trigger,
    messages,
    numbered,
    ray_lines,
    until,
)


def own(lines: list[str]) -> list[str]:
    """Without the double's two preamble lines (Ray's own)."""
    return lines[2:]


async def test_bytes_that_are_not_utf8_reach_the_task_log_in_order_with_nothing_after_them_lost(ray, caplog):
    trigger = make_trigger(ray)
    sid = trigger.job.submission_id
    ray.script(sid, lines=["before", raw(b"mid \xff\xfe bad"), "after"], line_every=0.15)
    event = await first_event(trigger)

    assert event["status"] == "success"
    assert own(ray_lines(caplog)) == ["before", "mid \ufffd\ufffd bad", "after"]
    assert own(event["log_tail"]) == ["before", "mid \ufffd\ufffd bad", "after"]
    warnings = messages(caplog, logging.WARNING)
    assert len(warnings) == 1 and "it was read as bytes" in warnings[0] and "HTTP 500" in warnings[0]
    assert ray.requests["driver_log"] == 1


async def test_a_job_failing_after_a_bad_byte_keeps_its_last_lines(ray, caplog):
    trigger = make_trigger(ray)
    sid = trigger.job.submission_id
    ray.script(sid, lines=["x", raw(b"\xff"), *numbered(60)], line_every=0.005, status="FAILED", driver_exit_code=3)
    event = await first_event(trigger)

    assert event["status"] == "failed" and event["driver_exit_code"] == 3
    assert event["log_tail"] == numbered(60)[-50:]
    assert ray_lines(caplog)[-60:] == numbered(60)
    assert "\ufffd" in ray_lines(caplog)
    # The failure message shows the last lines once: in the log tail, not again in Ray's message.
    assert event["log_tail"][-1] == numbered(60)[-1] and "line 59" not in event["reason"]


async def test_when_no_log_endpoint_answers_what_was_streamed_stays_and_one_line_says_so(ray, caplog):
    trigger = make_trigger(ray)
    sid = trigger.job.submission_id
    ray.script(sid, ends_after=math.inf)
    task = asyncio.create_task(first_event(trigger))
    await until(lambda: sid in ray.jobs)
    ray.write(sid, "streamed 1\nstreamed 2\n")
    await until(lambda: "streamed 2" in ray_lines(caplog))
    ray.write(sid, b"\xffbad\nafter\n")
    ray.driver_log_works = False
    ray.end(sid, "FAILED", driver_exit_code=1)
    event = await task

    assert event["status"] == "failed"
    assert own(ray_lines(caplog)) == ["streamed 1", "streamed 2"]
    assert own(event["log_tail"]) == ["streamed 1", "streamed 2"]
    warnings = messages(caplog, logging.WARNING)
    assert len(warnings) == 1 and "the task log has what was streamed" in warnings[0]
    # Ray's own message still carries the last lines, with the bad byte replaced.
    assert "\ufffdbad\nafter" in event["reason"]


async def test_a_tail_ray_closes_at_once_is_not_reopened_at_once(ray):
    trigger = make_trigger(ray, poll_interval=0.5)
    sid = trigger.job.submission_id
    ray.script(sid, lines=[raw(b"\xff early bad byte")], ends_after=2.0)
    event = await first_event(trigger)

    assert event["status"] == "success"
    assert len(ray.tails(sid)) <= 2.0 / 0.5 + 2  # not twice a second


async def test_control_sequences_are_removed_and_colour_kept(ray, caplog):
    trigger = make_trigger(ray)
    sid = trigger.job.submission_id
    hostile = ["a\x1b[2Jb", "\x1b]0;title\x07c", "\x00nul\x1b[1A", "\x1b[31mred\x1b[0m"]
    ray.script(sid, lines=hostile)
    event = await first_event(trigger)

    expected = ["ab", "c", "nul", "\x1b[31mred\x1b[0m"]
    assert own(ray_lines(caplog)) == expected and own(event["log_tail"]) == expected


async def test_a_cr_progress_bar_reaches_the_task_log_as_ray_sends_it_without_raw_cr(ray, caplog):
    trigger = make_trigger(ray)
    sid = trigger.job.submission_id
    ray.script(sid, lines=["p 10%\rp 50%\rp 100%", "done"])
    await first_event(trigger)

    # The double serves no /api/v0/logs/stream: this is the Jobs API fallback, where Ray 2.60 turns \r into
    # \n before anything is sent: the frames come as lines, shown once each (the raw path collapses them:
    # tests/integration/test_trigger_raw_log_local.py on real Ray).
    assert own(ray_lines(caplog)) == ["p 10%", "p 50%", "p 100%", "done"]
    assert sum("did not serve the raw log" in m for m in messages(caplog, logging.INFO)) == 1


async def test_a_line_that_never_ends_is_shown_in_pieces(ray, caplog):
    trigger = make_trigger(ray)
    sid = trigger.job.submission_id
    ray.script(sid, lines=["x" * (3 * MAX_LINE_CHARS + 5), "next"])
    await first_event(trigger)

    shown = own(ray_lines(caplog))
    assert [len(line) for line in shown] == [MAX_LINE_CHARS] * 3 + [5, 4]
    assert "".join(shown) == "x" * (3 * MAX_LINE_CHARS + 5) + "next"


async def test_a_large_log_is_shown_whole_with_get_logs_off_only_its_last_lines_are_kept(ray, caplog):
    trigger = make_trigger(ray, get_logs=False)
    sid = trigger.job.submission_id
    ray.script(sid, lines=numbered(20_000), ends_after=0.05)
    event = await first_event(trigger)

    assert ray_lines(caplog) == []
    assert event["log_tail"] == numbered(20_000)[-50:]
