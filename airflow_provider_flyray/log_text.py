"""A Ray job's output as task-log lines (pure): decoding, sanitising, bounded line assembly, last lines.

What Ray 2.60 really sends (checked against a local ``ray start --head``):

- its WebSocket tail and ``GET /api/jobs/{id}/logs`` read the driver log in *text* mode: ``\\r`` and
  ``\\r\\n`` arrive as ``\\n`` (universal newlines), and a byte that is not UTF-8 makes the read raise: the
  tail closes at once (losing what was buffered around the bad byte) and ``GET .../logs`` answers 500
  with a traceback;
- the state API ``GET /api/v0/logs/file?node_id=..&filename=job-driver-{id}.log`` (and ``/logs/stream``,
  which follows the file) serves the raw bytes, ``\\r`` included: ``RawLineAssembler`` turns them into
  the lines a terminal shows (a ``\\r`` progress bar: its last state, once).

Airflow 3's log viewer renders SGR colour sequences (``ESC[...m``, through its bundled ANSI-to-JSON
converter) and drops ``\\r``; every other control sequence (cursor movement, screen clears, OSC titles and
links, NUL and the other C0/C1 controls) is shown raw or breaks the page, so :func:`sanitize` keeps SGR
and removes the rest (a tab stays a tab).
"""

from __future__ import annotations

import codecs
import io
import json
import re
from collections import deque
from collections.abc import Iterable

# SGR is kept (Airflow renders colour); any other CSI, OSC/DCS/APC/PM strings, two-byte ESC sequences
# and single C0/C1 controls (except tab) are removed.
_CONTROL = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI ... final byte
    r"|\x1b[\]PX^_][^\x07\x1b]*(?:\x07|\x1b\\|$)"  # OSC / DCS / SOS / PM / APC ... BEL or ST (or line end)
    r"|\x1b[ -/]*[0-~]"  # other ESC sequences (charset selection, keypad modes, ...)
    r"|[\x00-\x08\x0a-\x1f\x7f-\x9f]"  # the remaining C0 controls, DEL and C1 controls
)
_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_UNSAFE_BUT_NEWLINE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SGR = re.compile(r"\x1b\[[0-9;:]*m")
# A line longer than this is shown in pieces: a job that never prints a newline can't grow the buffer.
MAX_LINE_CHARS = 16_384


def _keep_sgr(match: re.Match[str]) -> str:
    text = match.group(0)
    return text if _SGR.fullmatch(text) else ""


def sanitize(line: str) -> str:
    """The line without what the log viewer can't show safely (see the module docstring)."""
    if _UNSAFE.search(line) is None:  # the common case: nothing to do
        return line
    if "\r" in line:
        line = collapse_cr(line)
    return _CONTROL.sub(_keep_sgr, line)


def collapse_cr(line: str) -> str:
    """What a terminal shows of a line rewritten with ``\\r`` (a progress bar): its last state."""
    shown = ""
    for part in line.rstrip("\r").split("\r"):
        shown = part + shown[len(part) :]
    return shown


class LastLines:
    """The last ``count`` lines seen (the failure message's block), never more."""

    def __init__(self, count: int) -> None:
        self._lines: deque[str] = deque(maxlen=count)

    def add(self, line: str) -> None:
        self._lines.append(line)

    def extend(self, lines: Iterable[str]) -> None:
        self._lines.extend(lines)

    def lines(self) -> list[str]:
        return list(self._lines)


class LineAssembler:
    """Text pieces of one log, read from its start, into complete lines.

    ``skip`` characters (already shown by an earlier read of the same log) are consumed silently.
    :attr:`shown` counts the characters consumed into lines handed out: a partial line is not shown, so
    a re-read from the start resumes exactly after the last complete line.
    """

    def __init__(self, skip: int = 0) -> None:
        self._skip = skip
        self._pending = ""
        self.consumed = 0

    @property
    def shown(self) -> int:
        return max(self._skip, self.consumed - len(self._pending))

    def feed(self, text: str) -> list[str]:
        start, self.consumed = self.consumed, self.consumed + len(text)
        if self.consumed <= self._skip:
            return []
        if start < self._skip:
            text = text[self._skip - start :]
        joined = self._pending + text
        *lines, self._pending = joined.split("\n")
        while len(self._pending) > MAX_LINE_CHARS:
            lines.append(self._pending[:MAX_LINE_CHARS])
            self._pending = self._pending[MAX_LINE_CHARS:]
        if len(joined) > MAX_LINE_CHARS:
            lines = [piece for line in lines for piece in _pieces(line)]
        if _UNSAFE_BUT_NEWLINE.search(joined) is None:
            return lines  # the common case: one scan of the text, no per-line work
        return [sanitize(line) for line in lines]

    def finish(self) -> list[str]:
        """The log is complete: its last line, even without a newline."""
        pending, self._pending = self._pending, ""
        return [sanitize(piece) for piece in _pieces(pending)] if pending else []


def overlay(text: str, screen: str) -> str:
    """``text`` written over ``screen`` from its first column (what a ``\\r`` then ``text`` shows)."""
    return text + screen[len(text) :]


class RawLineAssembler:
    """Raw log bytes (the state API's driver log, ``\\r`` included), read from its start, into the lines a
    terminal shows: a line rewritten with ``\\r`` (a progress bar) shows only its last state, ``\\r\\n`` is
    a line end, bytes that are not UTF-8 become U+FFFD. Each line is then sanitised as :func:`sanitize` does.

    Offsets count bytes: ``skip`` bytes (shown by an earlier read) are consumed silently, :attr:`shown`
    is the end of the last line handed out (a partial line is re-read if the stream drops).
    :attr:`shown_text` counts the same lines in the characters of Ray's text-mode reads (``\\r`` and
    ``\\r\\n`` read as one ``\\n``), so a read through the Jobs API resumes exactly there. Memory is bounded:
    the pending line keeps its drawn state (at most :data:`MAX_LINE_CHARS`) and the bytes after its last
    ``\\r``; a segment longer than MAX_LINE_CHARS bytes is shown in pieces.
    """

    def __init__(self, skip: int = 0, skip_text: int = 0) -> None:
        self._skip = skip
        self.consumed = 0
        self.shown = skip
        self.shown_text = skip_text
        self._screen = ""  # the pending line as drawn up to its last \r
        self._screen_bytes = 0  # its bytes, each \r included
        self._screen_text = 0  # its characters as Ray's text-mode reads count them
        self._segment = bytearray()  # the pending bytes after its last \r
        self._after_cr = False  # the last byte was a \r (a \n right after it is one line end with it)

    def feed(self, data: bytes) -> list[str]:
        start, self.consumed = self.consumed, self.consumed + len(data)
        if self.consumed <= self._skip:
            return []
        if start < self._skip:
            data = data[self._skip - start :]
        *complete, last = data.split(b"\n")
        lines = []
        for piece in complete:
            self._add(piece)
            while len(self._segment) > MAX_LINE_CHARS:
                lines.append(self._cut())
            lines.append(self._end_line(1))
        self._add(last)
        while len(self._segment) > MAX_LINE_CHARS:
            lines.append(self._cut())
        return lines

    def finish(self) -> list[str]:
        """The log is complete: its last line, even without a newline."""
        if not self._segment and not self._screen_bytes:
            return []
        return [self._end_line(0)]

    def _add(self, piece: bytes) -> None:
        if not piece:
            return
        if b"\r" in piece:
            *drawn, piece = piece.split(b"\r")
            for part in drawn:
                self._segment += part
                text = self._segment.decode("utf-8", "replace")
                self._screen = overlay(text, self._screen)
                self._screen_bytes += len(self._segment) + 1
                self._screen_text += len(text) + 1
                self._segment.clear()
            self._after_cr = not piece
        else:
            self._after_cr = False
        self._segment += piece

    def _end_line(self, newline: int) -> str:
        """The pending line, ended by ``newline`` bytes (1: a \\n, 0: the end of the log)."""
        text = self._segment.decode("utf-8", "replace")
        line = overlay(text, self._screen)
        self.shown += self._screen_bytes + len(self._segment) + newline
        # Ray's text-mode read turns "\r\n" into one "\n": the \r already counted it.
        self.shown_text += self._screen_text + len(text) + (0 if self._after_cr else newline)
        self._screen, self._screen_bytes, self._screen_text, self._after_cr = "", 0, 0, False
        self._segment.clear()
        return sanitize(line)

    def _cut(self) -> str:
        """A piece of a line that is too long, cut at a character boundary (the rest starts afresh)."""
        cut = MAX_LINE_CHARS
        while cut > MAX_LINE_CHARS - 3 and self._segment[cut] & 0xC0 == 0x80:  # a UTF-8 continuation byte
            cut -= 1
        rest = self._segment[cut:]
        del self._segment[cut:]
        line = self._end_line(0)
        self._segment = rest
        return line


def _pieces(line: str) -> list[str]:
    if len(line) <= MAX_LINE_CHARS:
        return [line]
    return [line[at : at + MAX_LINE_CHARS] for at in range(0, len(line), MAX_LINE_CHARS)]


def utf8_text_decoder() -> io.IncrementalNewlineDecoder:
    """Raw log bytes to the text Ray's own endpoints would give: bad bytes become U+FFFD, a character
    split across chunks is kept whole, and newlines are translated as Ray's text-mode reads do (so
    character offsets agree with the tail's)."""
    return io.IncrementalNewlineDecoder(codecs.getincrementaldecoder("utf-8")(errors="replace"), translate=True)


class JsonStringStream:
    """The value of ``{"logs": "..."}`` (the answer of ``GET /api/jobs/{id}/logs``), decoded piece by
    piece from the body's chunks: the body is never held whole."""

    _PREFIX = re.compile(r'\s*\{\s*"logs"\s*:\s*"')

    def __init__(self) -> None:
        self._bytes = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._carry = ""
        self._started = False
        self.done = False

    def feed(self, chunk: bytes, final: bool = False) -> str:
        text = self._carry + self._bytes.decode(chunk, final)
        self._carry = ""
        if not self._started:
            match = self._PREFIX.match(text)
            if match is None:
                if len(text) < 64 and not final:
                    self._carry = text
                    return ""
                raise ValueError(f"not a Ray logs answer: {text[:80]!r}")
            self._started, text = True, text[match.end() :]
        if self.done:
            return ""
        end = _closing_quote(text)
        if end is not None:
            self.done = True
            return _json_piece(text[:end])
        # Keep back an escape the chunk may have cut (at most "\\uXXXX\\uXXXX" for a surrogate pair).
        for cut in range(len(text), max(-1, len(text) - 13), -1):
            try:
                piece = _json_piece(text[:cut])
            except ValueError:
                continue
            if piece and "\ud800" <= piece[-1] <= "\udbff":
                continue  # a high surrogate: its pair is in the next chunk
            self._carry = text[cut:]
            return piece
        raise ValueError(f"not a JSON string: {text[:80]!r}")


def _json_piece(text: str) -> str:
    value = json.loads(f'"{text}"')
    assert isinstance(value, str)
    return value


def _closing_quote(text: str) -> int | None:
    """The index of the first ``"`` not escaped by a backslash, if any."""
    at = text.find('"')
    while at != -1:
        before = at - 1
        while before >= 0 and text[before] == "\\":
            before -= 1
        if (at - 1 - before) % 2 == 0:
            return at
        at = text.find('"', at + 1)
    return None
