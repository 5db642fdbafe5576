"""The MLLP framer: whatever way a byte stream is cut, it yields the frames that were sent."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caremesh.connectors.mllp_framing import (
    END,
    HEAD_BYTES,
    START,
    Frame,
    MllpFramer,
    Oversized,
    frame,
)

MAX = 64

payloads = st.binary(max_size=MAX).map(lambda b: b.replace(b"\x0b", b"").replace(b"\x1c", b""))
garbage = st.binary(max_size=20).map(lambda b: b.replace(b"\x0b", b""))


def feed_all(framer: MllpFramer, chunks: list[bytes]) -> list[Frame | Oversized]:
    events: list[Frame | Oversized] = []
    for chunk in chunks:
        events.extend(framer.feed(chunk))
        assert framer.buffered <= MAX + 1
    return events


def cut(stream: bytes, points: list[int]) -> list[bytes]:
    bounds = sorted({p % (len(stream) + 1) for p in points} | {0, len(stream)})
    return [stream[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(garbage, payloads), max_size=6),
    garbage,
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
)
def test_any_cut_of_framed_messages_with_garbage_yields_the_messages(
    items: list[tuple[bytes, bytes]], tail: bytes, points: list[int]
) -> None:
    stream = b"".join(junk + frame(p) for junk, p in items) + tail
    events = feed_all(MllpFramer(MAX), cut(stream, points))
    assert events == [Frame(p) for _, p in items]


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=MAX + 1, max_value=5 * MAX),
    payloads,
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
)
def test_an_oversized_frame_is_refused_in_place_and_the_next_one_still_comes(
    size: int, after: bytes, points: list[int]
) -> None:
    big = b"MSH|" + b"x" * (size - 4)
    stream = frame(b"first") + frame(big) + frame(after)
    events = feed_all(MllpFramer(MAX), cut(stream, points))
    assert len(events) == 3
    assert events[0] == Frame(b"first")
    assert isinstance(events[1], Oversized)
    assert events[1].head.startswith(b"MSH|")
    assert events[1].size >= MAX
    assert events[2] == Frame(after)


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        pytest.param([START + b"abc" + END], [Frame(b"abc")], id="one frame"),
        pytest.param([START + b"abc\x1c", b"\x0d"], [Frame(b"abc")], id="end block straddles"),
        pytest.param([START + b"ab", b"c" + END], [Frame(b"abc")], id="payload straddles"),
        pytest.param(
            [START + b"trunc", START + b"good" + END], [Frame(b"good")], id="restart abandons"
        ),
        pytest.param([b"noise\r\n" + START + b"x" + END + b"junk"], [Frame(b"x")], id="garbage"),
        pytest.param([START + b"a\x1cb" + END], [Frame(b"a\x1cb")], id="lone FS is data"),
        pytest.param([START + END], [Frame(b"")], id="empty frame"),
        pytest.param([b"\x1c\x0d", START + b"z" + END], [Frame(b"z")], id="stray end block"),
    ],
)
def test_framing_cases(chunks: list[bytes], expected: list[Frame]) -> None:
    assert feed_all(MllpFramer(MAX), chunks) == expected


def test_mid_frame_tells_a_disconnect_would_truncate() -> None:
    framer = MllpFramer(MAX)
    framer.feed(b"junk")
    assert not framer.mid_frame
    framer.feed(START + b"MSH|partial")
    assert framer.mid_frame
    framer.feed(END)
    assert not framer.mid_frame


def test_an_oversized_frame_is_not_buffered() -> None:
    framer = MllpFramer(MAX)
    framer.feed(START + b"MSH|")
    for _ in range(1000):
        framer.feed(b"y" * 1000)
        assert framer.buffered <= MAX + 1
    [event] = framer.feed(END)
    assert isinstance(event, Oversized)
    assert event.size == 4 + 1000 * 1000
    assert event.head.startswith(b"MSH|y")
    assert len(event.head) <= HEAD_BYTES
