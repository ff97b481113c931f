"""log_text: decoding, sanitising, bounded line assembly and the last lines (pure, no I/O)."""

from __future__ import annotations

import json

import pytest

from airflow_provider_flyray.log_text import (
    MAX_LINE_CHARS,
    JsonStringStream,
    LastLines,
    LineAssembler,
    collapse_cr,
    sanitize,
    utf8_text_decoder,
)

# ---- sanitize: what Airflow 3's log viewer cannot show is removed, colour (SGR) is kept -------------------


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain text\twith a tab", "plain text\twith a tab"),
        ("a\x1b[2Jb", "ab"),  # screen clear
        ("a\x1b[1A\x1b[2Kb", "ab"),  # cursor up, erase line
        ("\x1b[?25lhidden cursor\x1b[?25h", "hidden cursor"),
        ("\x1b]0;a title\x07text", "text"),  # OSC title, BEL-terminated
        ("\x1b]8;;https://x.example\x1b\\link\x1b]8;;\x1b\\", "link"),  # OSC 8 hyperlink, ST-terminated
        ("\x1b]0;never terminated", ""),
        ("nul\x00byte", "nulbyte"),
        ("bell\x07 backspace\x08 del\x7f", "bell backspace del"),
        ("c1 \x9b2J csi", "c1 2J csi"),
        ("\x1b(Bcharset", "charset"),
        ("\x1b[31mred\x1b[0m \x1b[1;32mbold green\x1b[m", "\x1b[31mred\x1b[0m \x1b[1;32mbold green\x1b[m"),
        ("\x1b[38;5;208morange\x1b[0m", "\x1b[38;5;208morange\x1b[0m"),
        ("p 10%\rp 50%\rp 100%", "p 100%"),
        ("downloading 12345\rdone\r", "doneloading 12345"),  # what a terminal shows: an overwrite
        ("windows line\r", "windows line"),
        ("caf\u00e9 \ufffd \u4e2d\u6587", "caf\u00e9 \ufffd \u4e2d\u6587"),
    ],
)
def test_sanitize(raw, shown):
    assert sanitize(raw) == shown


def test_collapse_cr_keeps_the_last_state():
    assert collapse_cr("[#   ] 25%\r[##  ] 50%\r[####] 100%") == "[####] 100%"
    assert collapse_cr("no cr") == "no cr"


# ---- decoding ---------------------------------------------------------------------------------------------


def test_bytes_decode_with_replacement_in_order_and_characters_split_across_chunks_stay_whole():
    decoder = utf8_text_decoder()
    chunks = [b"before\n\xff\xfe bad\ncaf", b"\xc3", b"\xa9\nwin\r", b"\nmac\rend"]
    text = "".join(decoder.decode(chunk) for chunk in chunks) + decoder.decode(b"", final=True)
    # Newlines translated as Ray's text-mode reads do, so offsets agree with its tail's.
    assert text == "before\n\ufffd\ufffd bad\ncaf\u00e9\nwin\nmac\nend"


@pytest.mark.parametrize("size", [1, 2, 5, 7, 64, 4096])
def test_json_string_stream_decodes_ray_logs_answers_in_any_chunking(size):
    logs = 'line "quoted" \\ back\\slash\n\ttab caf\u00e9 \U0001f600 emoji \x1b[2J \x00 end\n' * 20
    for body in (json.dumps({"logs": logs}), json.dumps({"logs": logs}, ensure_ascii=False)):
        data = body.encode()
        stream = JsonStringStream()
        pieces = [stream.feed(data[i : i + size]) for i in range(0, len(data), size)]
        pieces.append(stream.feed(b"", final=True))
        assert "".join(pieces) == logs and stream.done


def test_json_string_stream_refuses_a_body_that_is_not_ray_logs():
    with pytest.raises(ValueError):
        JsonStringStream().feed(b'{"detail": "x" }' + b" " * 80, final=True)


# ---- lines --------------------------------------------------------------------------------------------------


def test_line_assembler_splits_skips_what_was_shown_and_holds_back_a_partial_line():
    first = LineAssembler()
    assert first.feed("one\ntwo\nthr") == ["one", "two"]
    assert first.shown == len("one\ntwo\n")
    # A re-read from the start (a re-opened tail, the end-of-job rest) resumes after the last full line.
    again = LineAssembler(skip=first.shown)
    assert again.feed("one\nt") == [] and again.feed("wo\nthree\nfo") == ["three"]
    assert again.finish() == ["fo"]


def test_line_assembler_cuts_a_line_that_never_ends_so_memory_stays_bounded():
    lines = LineAssembler()
    shown = []
    for _ in range(10):
        shown += lines.feed("x" * (MAX_LINE_CHARS // 2))
    assert all(len(line) == MAX_LINE_CHARS for line in shown) and len(shown) == 4
    assert lines.consumed - lines.shown <= MAX_LINE_CHARS


def test_line_assembler_sanitises_each_line():
    assert LineAssembler().feed("a\x1b[2Jb\n\x1b]0;t\x07c\n") == ["ab", "c"]


def test_last_lines_keeps_only_the_last():
    last = LastLines(3)
    last.extend(f"line {i}" for i in range(1000))
    last.add("end")
    assert last.lines() == ["line 997", "line 998", "line 999", "end"][-3:]
