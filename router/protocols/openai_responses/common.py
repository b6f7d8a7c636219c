"""NAME and the constant facts the server asks about, and the helpers and tables that
several sections share."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from router.protocols import ir

NAME = "openai-responses"
ACCEPTS_IMAGE_URLS = True
MODEL_IN_BODY = True
SIGNS_TOOL_CALLS = False
FORWARDED_HEADERS: tuple[str, ...] = ()

_decode = msgspec.json.decode
_encode = msgspec.json.encode

_ENCRYPTED_REASONING = "reasoning.encrypted_content"


def _new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


def _str(mapping: dict[str, Any], key: str) -> str | None:
    value = mapping.get(key)
    return value if isinstance(value, str) else None


def _invalid(message: str, param: str | None = None) -> ir.Error:
    return ir.Error(400, "invalid_request", message, param=param)


def _reasoning_item(item_id: str, text: str, encrypted: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": item_id,
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": text}] if text else [],
    }
    if encrypted:
        item["encrypted_content"] = encrypted
    return item
