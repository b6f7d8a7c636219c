"""Priming reads an upstream stream up to its first content. A chunk that carries the
whole stream is fed event by event only that far; the rest is decoded after the first
write to the client, with the same events in the end."""

from __future__ import annotations

from pathlib import Path

from router.protocols import anthropic, ir, openai_chat
from router.providers.upstream import _feed_until_content

CANNED = Path(__file__).parent.parent / "bench" / "canned"


def events_of(module, stream: bytes) -> list[ir.Event]:
    decoder = module.StreamDecoder()
    return decoder.feed(stream) + decoder.close()


def test_whole_stream_in_one_chunk_is_fed_only_to_its_first_content() -> None:
    for module, name in ((openai_chat, "openai_chat.sse"), (anthropic, "anthropic_messages.sse")):
        stream = (CANNED / name).read_bytes().strip(b"\n") + b"\n\n"
        decoder = module.StreamDecoder()
        head: list[ir.Event] = []
        fed, primed = _feed_until_content(decoder, stream, head, frozenset())
        assert primed
        assert 0 < fed < len(stream) // 3  # a few events, not the whole stream
        assert stream[:fed].endswith(b"\n\n")
        assert isinstance(head[-1], ir.TextDelta)
        assert not any(isinstance(event, ir.Finish) for event in head)
        rest = decoder.feed(stream[fed:]) + decoder.close()
        assert head + rest == events_of(module, stream)


def test_chunk_without_content_is_fed_whole() -> None:
    stream = (
        b'data: {"id":"c1","model":"m","choices":[{"index":0,"delta":{"role":"assistant"}}]}\n\n'
    )
    decoder = openai_chat.StreamDecoder()
    head: list[ir.Event] = []
    assert _feed_until_content(decoder, stream, head, frozenset()) == (len(stream), False)
    assert [type(event) for event in head] == [ir.Start]
