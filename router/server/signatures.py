"""Gemini thought signatures for clients that cannot carry them.

Gemini 3 attaches a `thoughtSignature` to the first `functionCall` of each step and
rejects (400) a later request whose replayed call lacks it. A Gemini client sends it back
itself; OpenAI Chat, Responses and Anthropic clients have no field for it on a tool call.
So the translation stage keeps it here, keyed by the tool-call id the client sees:

* filled from the intermediate form when a Gemini upstream's answer (or stream) is
  translated for another protocol (`remember_response`, `remember_events`);
* read when a later request is translated for a Gemini upstream (`restore`): a replayed
  call without a signature gets the remembered one, if its name matches too.

The cache is per process, bounded (entries and bytes), least recently used out first. A
miss (another worker, a restart, an evicted entry) leaves the call unsigned and the Gemini
builder falls back to Google's documented `skip_thought_signature_validator`."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable

from router.protocols import ir
from router.providers.upstream import PrimedStream

MAX_ENTRIES = 10_000
MAX_BYTES = 32 * 1024 * 1024  # signatures are opaque base64, typically 0.1-4 KB each


class SignatureCache:
    """tool-call id -> (function name, signature), least recently used evicted first."""

    def __init__(self, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, call_id: str, name: str, signature: str) -> None:
        size = _size(call_id, name, signature)
        if not call_id or size > self.max_bytes:
            return
        self._drop(call_id)
        self._entries[call_id] = (name, signature)
        self._bytes += size
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def get(self, call_id: str, name: str) -> str | None:
        entry = self._entries.get(call_id)
        if entry is None or entry[0] != name:
            return None
        self._entries.move_to_end(call_id)
        return entry[1]

    def _drop(self, call_id: str) -> None:
        entry = self._entries.pop(call_id, None)
        if entry is not None:
            self._bytes -= _size(call_id, *entry)


def _size(call_id: str, name: str, signature: str) -> int:
    return len(call_id) + len(name) + len(signature)


CACHE = SignatureCache()


def remember_parts(parts: Iterable[ir.Part], cache: SignatureCache = CACHE) -> None:
    for part in parts:
        if isinstance(part, ir.ToolCall) and part.signature:
            cache.put(part.id, part.name, part.signature)


def remember_response(response: ir.Response, cache: SignatureCache = CACHE) -> None:
    remember_parts(response.parts, cache)


def remember_event(event: ir.Event, cache: SignatureCache = CACHE) -> None:
    if isinstance(event, ir.ToolCallStart) and event.signature:
        cache.put(event.id, event.name, event.signature)


async def remember_events(
    batches: AsyncIterator[list[ir.Event]], cache: SignatureCache = CACHE
) -> AsyncIterator[list[ir.Event]]:
    """`batches`, unchanged, remembering each signed tool call on the way through."""
    async for events in batches:
        for event in events:
            remember_event(event, cache)
        yield events


def watch_stream(primed: PrimedStream, cache: SignatureCache = CACHE) -> None:
    """Remember the signed tool calls of a translated stream as they go by."""
    for event in primed.head_events:
        remember_event(event, cache)
    if primed.batches is not None:
        primed.batches = remember_events(primed.batches, cache)


def restore(request: ir.Request, cache: SignatureCache = CACHE) -> None:
    """Give each replayed, unsigned tool call the signature remembered for its id."""
    for message in request.messages:
        if message.role != "assistant":
            continue
        for part in message.parts:
            if isinstance(part, ir.ToolCall) and not part.signature:
                part.signature = cache.get(part.id, part.name)
