"""The SSE parser against the WHATWG event-stream algorithm, written out plainly here, on
generated streams cut into arbitrary chunks: whole-event fast path, open events across
chunks, CRLF, comments, multi-line data, named events and stray blank lines."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from router.protocols.sse import SSEParser


def reference(stream: bytes) -> list[tuple[str | None, str]]:
    """Dispatch on blank lines; `data` lines join with \\n; a field's first space goes;
    an event with neither data nor a name dispatches nothing; an unfinished last event
    counts (the parser's `close`)."""
    events: list[tuple[str | None, str]] = []
    data: list[str] = []
    name: str | None = None
    lines = stream.decode().replace("\r\n", "\n").split("\n")
    for line in [*lines, ""]:
        if not line:
            if data or name is not None:
                events.append((name, "\n".join(data)))
            data, name = [], None
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value
    return events


text = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=12
)
line = st.one_of(
    text.map(lambda t: f"data: {t}"),
    text.map(lambda t: f"data:{t}"),
    text.map(lambda t: f"event: {t}"),
    text.map(lambda t: f": {t}"),
    text.map(lambda t: f"id: {t}"),
)
event = st.lists(line, min_size=1, max_size=4)


@st.composite
def streams(draw) -> bytes:
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    out = []
    for lines in draw(st.lists(event, max_size=8)):
        out.append(newline.join(lines) + newline * draw(st.integers(1, 3)))
    if draw(st.booleans()):  # an open last event, flushed by close()
        out.append(newline.join(draw(event)))
    return "".join(out).encode()


def parse(stream: bytes, cuts: list[int]) -> list[tuple[str | None, str]]:
    parser = SSEParser()
    events = []
    previous = 0
    for cut in [*sorted({min(c, len(stream)) for c in cuts}), len(stream)]:
        events += parser.feed(stream[previous:cut])
        previous = cut
    events += parser.close()
    return [(e.event, e.data) for e in events]


@settings(max_examples=400, deadline=None)
@given(streams(), st.lists(st.integers(0, 400), max_size=6))
def test_any_stream_in_any_chunks_parses_like_the_reference(stream: bytes, cuts) -> None:
    assert parse(stream, cuts) == reference(stream)


def test_whole_events_in_one_chunk() -> None:
    stream = b'data: {"a":1}\n\ndata: {"b":2}\n\nevent: done\ndata: x\ndata: y\n\n: ping\n\n'
    assert parse(stream, []) == [(None, '{"a":1}'), (None, '{"b":2}'), ("done", "x\ny")]


def test_event_left_open_by_one_chunk_finishes_in_the_next() -> None:
    stream = b"event: delta\ndata: one\n\ndata: two\n\n"
    for cut in range(len(stream) + 1):
        assert parse(stream, [cut]) == [("delta", "one"), (None, "two")], cut
