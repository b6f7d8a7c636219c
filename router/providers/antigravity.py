"""gemini-antigravity: the Code Assist API as Google's Antigravity IDE calls it.

Differences from gemini-cli-oauth (code_assist):
* an ordered list of base URLs (daily sandbox, then autopush); a call moves to the next
  one on 429 or a network error;
* its own user agent and envelope: `{model, userAgent, project, requestId,
  request: {..., sessionId}}`;
* client model names map to Antigravity's through an alias table (built-in defaults,
  overridden by `model_aliases` in the pool's `options` and on the instance);
* tool schemas are reduced to the keywords every Antigravity backend (Gemini and
  Claude models) accepts; what is dropped is kept as a hint in the description."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from typing import Any

import msgspec

from router.compiler.plan import Instance, Provider
from router.protocols import ir
from router.protocols.gemini.schema import from_gemini, to_gemini
from router.providers.base import Call
from router.providers.code_assist import Account, CodeAssistAdapter

log = logging.getLogger("router.antigravity")

DAILY_BASE = "https://daily-cloudcode-pa.sandbox.googleapis.com"
AUTOPUSH_BASE = "https://autopush-cloudcode-pa.sandbox.googleapis.com"
ENVELOPE_USER_AGENT = "antigravity"
DEFAULT_MODELS = (
    "gemini-2.5-computer-use-preview-10-2025",
    "gemini-3-pro-image-preview",
    "gemini-3-pro-preview",
    "gemini-3-flash-preview",
    "gemini-2.5-flash",
    "gemini-claude-sonnet-4-5",
    "gemini-claude-sonnet-4-5-thinking",
    "gemini-claude-opus-4-5-thinking",
)
DEFAULT_ALIASES: Mapping[str, str] = {
    "gemini-2.5-computer-use-preview-10-2025": "rev19-uic3-1p",
    "gemini-3-pro-image-preview": "gemini-3-pro-image",
    "gemini-3-pro-preview": "gemini-3-pro-high",
    "gemini-3-flash-preview": "gemini-3-flash",
    "gemini-claude-sonnet-4-5": "claude-sonnet-4-5",
    "gemini-claude-sonnet-4-5-thinking": "claude-sonnet-4-5-thinking",
    "gemini-claude-opus-4-5-thinking": "claude-opus-4-5-thinking",
}
FALLBACK_STATUSES = frozenset({429})

_encode = msgspec.json.Encoder().encode
# what both Gemini's Schema and Anthropic's input_schema accept, everywhere in a tree
_KEPT_KEYWORDS = ("type", "description", "properties", "required", "items", "enum")
_SILENTLY_DROPPED = frozenset({"propertyOrdering", "title", "$schema"})


class AntigravityAdapter(CodeAssistAdapter):
    default_models = DEFAULT_MODELS
    counts_tokens = False  # its API has no countTokens: the estimate answers
    provider_type = "gemini-antigravity"
    default_bases = (DAILY_BASE, AUTOPUSH_BASE)
    default_user_agent = "antigravity/1.11.5 linux/amd64"
    default_aliases = DEFAULT_ALIASES
    ide_type = "ANTIGRAVITY"

    def build_account(self, provider: Provider, instance: Instance) -> Account:
        account = super().build_account(provider, instance)
        account.session_id = "-" + str(uuid.uuid4().int % 10**19)
        return account

    async def prepare(self, call: Call) -> None:
        await super().prepare(call)
        call.state["request_id"] = f"agent-{uuid.uuid4()}"

    def wrap_body(self, call: Call) -> bytes:
        account: Account = call.state["account"]
        request = _request_object(call.body)
        clean_tools(request)
        request["sessionId"] = account.session_id
        envelope = {
            "model": call.state["model"],
            "userAgent": ENVELOPE_USER_AGENT,
            "project": call.state["project"],
            "requestId": call.state["request_id"],
            "request": request,
        }
        return _encode(envelope)

    async def retry(self, call: Call, status: int | None) -> bool:
        account: Account = call.state["account"]
        index = call.state.get("base_index", 0)
        if (status is None or status in FALLBACK_STATUSES) and index + 1 < len(account.base_urls):
            call.state["base_index"] = index + 1
            why = "network error" if status is None else f"HTTP {status}"
            log.info(
                "instance %s: %s from endpoint %d, trying the next", call.instance.id, why, index
            )
            return True
        return await super().retry(call, status)


def _request_object(body: bytes) -> dict[str, Any]:
    try:
        value = msgspec.json.decode(body or b"{}")
    except msgspec.DecodeError:
        raise ir.Error(400, "invalid_request", "request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise ir.Error(400, "invalid_request", "request body is not a JSON object")
    return value


# --- tool schemas -------------------------------------------------------------------


def clean_tools(request: dict[str, Any]) -> None:
    """Rewrite each function declaration's schema (`parameters` or
    `parametersJsonSchema`) into `parameters` with only the portable keywords."""
    for tool in request.get("tools") or []:
        if not isinstance(tool, dict):
            continue
        declarations = tool.get("functionDeclarations") or tool.get("function_declarations")
        for declaration in declarations or []:
            if isinstance(declaration, dict):
                _clean_declaration(declaration)


def _clean_declaration(declaration: dict[str, Any]) -> None:
    schema = declaration.pop("parametersJsonSchema", None)
    if schema is None:
        schema = declaration.pop("parameters_json_schema", None)
    if schema is None and isinstance(declaration.get("parameters"), dict):
        schema = from_gemini(declaration["parameters"])
    if schema is None:
        return
    cleaned = clean_schema(schema)
    if cleaned.get("properties") or cleaned.get("type") not in (None, "object"):
        declaration["parameters"] = cleaned
    else:
        declaration.pop("parameters", None)


def clean_schema(schema: Any) -> dict[str, Any]:
    """A JSON Schema reduced to `_KEPT_KEYWORDS` ($refs inlined, unions collapsed to their
    first branch); each dropped constraint is appended to the description as a hint."""
    return _portable(to_gemini(schema))


def _portable(node: dict[str, Any]) -> dict[str, Any]:
    hints: list[str] = []
    if isinstance(node.get("anyOf"), list) and node["anyOf"]:
        branches = [b for b in node["anyOf"] if isinstance(b, dict)]
        kinds = sorted({str(b.get("type", "any")) for b in branches})
        hints.append("one of: " + ", ".join(kinds))
        outer = {k: v for k, v in node.items() if k != "anyOf"}
        node = {**(branches[0] if branches else {"type": "string"}), **outer}
    out: dict[str, Any] = {k: node[k] for k in ("type", "enum", "required") if k in node}
    for key, value in node.items():
        if key in _KEPT_KEYWORDS or key in _SILENTLY_DROPPED or key == "anyOf":
            continue
        hints.append(key if value is True else f"{key}: {json.dumps(value)}")
    description = node.get("description")
    if hints:
        hint = "(" + "; ".join(hints) + ")"
        description = f"{description} {hint}" if description else hint
    if description:
        out["description"] = description
    if isinstance(node.get("properties"), dict):
        out["properties"] = {k: _portable(v) for k, v in node["properties"].items()}
    if isinstance(node.get("items"), dict):
        out["items"] = _portable(node["items"])
    return out
