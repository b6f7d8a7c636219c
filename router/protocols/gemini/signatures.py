"""Reasoning signatures of other providers, carried through Gemini's `thoughtSignature`.

* Other providers' signatures. A Gemini client gets another provider's reasoning
  signature on the thought part that carries that reasoning (as Gemini-origin thought
  signatures are placed): `thoughtSignature` is base64 of the UTF-8 text
  "<origin>:<signature>" ("<origin>:redacted:<data>" for Anthropic redacted thinking).
  Only when the client asked to see thoughts (`includeThoughts`): the signed text must
  come back with its signature, and hidden text cannot. Parsing a request, a
  `thoughtSignature` that decodes to printable ASCII starting with another protocol's
  name and ":" (a Gemini signature is opaque binary) becomes that provider's `Thinking`,
  taking the text of the unsigned thought parts right before it (a stream delivers the
  text first and the signature on an empty thought part after it); it is removed from
  the part it sat on, so a Gemini upstream never receives it.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from router.protocols import ir
from router.protocols.gemini.common import NAME, standard_base64

_REDACTED = "redacted:"
_FOREIGN = tuple(protocol for protocol in ir.PROTOCOLS if protocol != NAME)


def wrap_signature(value: str | None, origin: str | None, redacted: bool = False) -> str | None:
    """The `thoughtSignature` a Gemini client sees for reasoning made by `origin`: Gemini's
    own unchanged, another protocol's as base64 of "<origin>:[redacted:]<value>", none for
    reasoning of unknown origin (it could not be told apart from Gemini's own)."""
    if not value:
        return None
    if origin == NAME:
        return value
    if origin not in _FOREIGN:
        return None
    text = f"{origin}:{_REDACTED if redacted else ''}{value}"
    return base64.b64encode(text.encode()).decode()


def _unwrap_foreign(value: str) -> tuple[str, str, bool] | None:
    """(signature or redacted data, origin, redacted) of a `thoughtSignature` that
    `wrap_signature` made for another protocol, in standard or URL-safe base64; None for
    anything else (Gemini's own signatures are opaque binary, never printable ASCII
    starting with a protocol name and ":")."""
    try:
        raw = base64.b64decode(standard_base64(value), validate=True)
    except (binascii.Error, ValueError):
        return None
    if not raw.isascii():
        return None
    text = raw.decode("ascii")
    origin, sep, rest = text.partition(":")
    if not sep or origin not in _FOREIGN or not rest or not text.isprintable():
        return None
    if rest.startswith(_REDACTED) and len(rest) > len(_REDACTED):
        return rest.removeprefix(_REDACTED), origin, True
    return rest, origin, False


def unwrap_signature(value: Any) -> tuple[str | None, str | None, bool]:
    """(signature, origin, redacted) of a `thoughtSignature` a Gemini client carried back:
    one that `wrap_signature` made for another protocol comes back unwrapped; any other
    string is Gemini's own, `(value, "gemini", False)`; a non-string or empty value is
    no signature, `(None, None, False)`."""
    if not isinstance(value, str) or not value:
        return None, None, False
    return _unwrap_foreign(value) or (value, NAME, False)


def _foreign_thinking(
    kept: list[ir.Part], part: dict[str, Any], foreign: tuple[str, str, bool]
) -> ir.Thinking:
    """Another provider's thinking, its text gathered from the unsigned thought parts just
    before the signature (stream form) and from the signed part itself (JSON form)."""
    value, origin, redacted = foreign
    if redacted:
        return ir.Thinking(redacted=True, data=value, origin=origin)
    texts: list[str] = []
    while kept and isinstance(last := kept[-1], ir.Thinking) and _unsigned_thought(last):
        texts.insert(0, last.text)
        kept.pop()
    if part.get("thought") is True and isinstance(part.get("text"), str):
        texts.append(part["text"])
    return ir.Thinking(text="".join(texts), signature=value, origin=origin)


def _unsigned_thought(part: ir.Thinking) -> bool:
    return part.origin == NAME and not part.redacted and not part.signature
