"""MLLP framing (HL7 v2.5.1 Transport Specification: MLLP, release 2): bytes in, frames out.

A frame is `<VT 0x0B> payload <FS 0x1C><CR 0x0D>`. The framer is a pure state machine fed with
whatever chunks a socket read returns:

- bytes outside a frame (before a start block) are skipped;
- a start block inside an unfinished frame abandons that frame (the sender started over) and
  opens a new one, so a truncated message never swallows the next one;
- a frame whose payload passes `max_bytes` is not buffered further: its bytes are dropped up to
  its end block, and an `Oversized` event (with the head of the payload, for the ACK's MSH) is
  emitted at that point, in order with the other frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

START: Final = b"\x0b"
END: Final = b"\x1c\x0d"
HEAD_BYTES: Final = 4096
"""How much of an oversized payload is kept (enough for its MSH segment)."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One complete message payload, framing removed."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Oversized:
    """A frame that was larger than the limit and was dropped; `head` is its first bytes."""

    head: bytes
    size: int


FrameEvent = Frame | Oversized


def frame(payload: bytes) -> bytes:
    """`payload` wrapped in MLLP framing."""
    return START + payload + END


class MllpFramer:
    """Reassembles frames from a byte stream; one instance per connection."""

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._in_frame = False
        self._buf = bytearray()
        self._dropping = False
        self._head = b""
        self._dropped = 0

    @property
    def mid_frame(self) -> bool:
        """True while a frame has started and not ended (a disconnect now truncates it)."""
        return self._in_frame

    @property
    def buffered(self) -> int:
        """How many bytes are held for the current frame (at most `max_bytes` + 1)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[FrameEvent]:
        """Consume one chunk; return the frames (and oversize refusals) it completed, in order."""
        events: list[FrameEvent] = []
        pos = 0
        size = len(data)
        while pos < size:
            if not self._in_frame:
                start = data.find(START, pos)
                if start < 0:
                    return events  # garbage between frames
                self._open()
                pos = start + 1
                continue
            pos = self._consume(data, pos, events)
        return events

    def _open(self) -> None:
        self._in_frame = True
        self._buf.clear()
        self._dropping = False
        self._head = b""
        self._dropped = 0

    def _consume(self, data: bytes, pos: int, events: list[FrameEvent]) -> int:
        """Consume frame bytes from `pos`; return where the caller continues."""
        if self._buf.endswith(b"\x1c") and data[pos : pos + 1] == b"\x0d":
            # The end block straddled two chunks: FS ended the last one, CR starts this one.
            self._finish(bytes(self._buf[:-1]), events)
            return pos + 1
        end = data.find(END, pos)
        restart = data.find(START, pos)
        if 0 <= restart < (end if end >= 0 else len(data)):
            # A new start block before this frame ended: the unfinished frame is abandoned.
            self._open()
            return restart + 1
        if end >= 0:
            self._append(data[pos:end])
            self._finish(bytes(self._buf), events)
            return end + 2
        self._append(data[pos:])
        return len(data)

    def _append(self, chunk: bytes) -> None:
        if self._dropping:
            self._dropped += len(chunk)
            self._buf[:] = chunk[-1:]  # keep the last byte for a straddling end block
            return
        self._buf += chunk
        if len(self._buf) > self._max + 1:  # +1: a trailing FS may still belong to the end
            self._dropping = True
            self._head = bytes(self._buf[:HEAD_BYTES])
            self._dropped = len(self._buf)
            self._buf[:] = self._buf[-1:]

    def _finish(self, payload: bytes, events: list[FrameEvent]) -> None:
        if self._dropping:
            events.append(Oversized(self._head, self._dropped))
        elif len(payload) > self._max:
            events.append(Oversized(payload[:HEAD_BYTES], len(payload)))
        else:
            events.append(Frame(payload))
        self._in_frame = False
        self._buf.clear()
        self._dropping = False
