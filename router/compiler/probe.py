"""A request as routing sees it, built from command-line or test-case input, for
`router explain` and `router test` (the server builds its own from HTTP)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from router.compiler.plan import Plan, Target

_PROTOCOL_PATHS = (
    (re.compile(r"^/v1/chat/completions/?$"), "openai-chat"),
    (re.compile(r"^/v1/responses/?$"), "openai-responses"),
    (re.compile(r"^/v1/messages(/count_tokens)?/?$"), "anthropic"),
    (re.compile(r"^/v1(beta)?/models/(?P<model>[^/:]+):[A-Za-z]+$"), "gemini"),
)
_API_ROOTS = ("v1", "v1beta")


@dataclass(frozen=True, slots=True)
class Probe:
    protocol: str
    model: str
    path: str | None = None
    path_provider: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Mapping[str, Any] = field(default_factory=dict)

    def context(self) -> dict[str, Any]:
        """What pipeline expressions see besides the document."""
        return {"model": self.model, "protocol": self.protocol, "headers": dict(self.headers)}


def split_path(path: str) -> tuple[str | None, str]:
    """`/claude-custom/v1/messages?x=1` -> ("claude-custom", "/v1/messages")."""
    path = path.split("?", 1)[0]
    parts = path.lstrip("/").split("/", 1)
    if parts[0] and parts[0] not in _API_ROOTS:
        return parts[0], "/" + (parts[1] if len(parts) > 1 else "")
    return None, path


def make_probe(
    *,
    protocol: str | None = None,
    model: str | None = None,
    path: str | None = None,
    headers: Mapping[str, Any] | None = None,
    body: Mapping[str, Any] | None = None,
) -> Probe:
    """Fill in what is implied: the protocol and (for Gemini) the model from the path, the
    model from the body, the body's `model` field for the body-carrying protocols.
    Raises ValueError when no model can be found."""
    path_provider = None
    path_model = None
    if path is not None:
        path_provider, rest = split_path(path)
        for pattern, name in _PROTOCOL_PATHS:
            found = pattern.match(rest)
            if found:
                protocol = protocol or name
                path_model = found.groupdict().get("model")
                break
    protocol = protocol or "openai-chat"
    document = dict(body or {})
    model = model or path_model or (document.get("model") if protocol != "gemini" else None)
    if not isinstance(model, str) or not model:
        raise ValueError("no model given (use --model, a body with `model`, or a Gemini path)")
    if protocol != "gemini":
        document.setdefault("model", model)
    return Probe(
        protocol=protocol,
        model=model,
        path=path,
        path_provider=path_provider,
        headers={str(k).lower(): _text(v) for k, v in (headers or {}).items()},
        body=document,
    )


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def mapped_body(target: Target, probe: Probe) -> dict[str, Any]:
    """The client body after the target's request-stage mappings."""
    body = dict(probe.body)
    if target.pipeline is None:
        return body
    return target.pipeline.run("request", body, probe.context())


def upstream_model(target: Target, probe: Probe, body: Mapping[str, Any]) -> tuple[str, str]:
    """(model, why): the target's model, else the mapped body's, else the client's."""
    if target.model is not None:
        return target.model, "set by the route"
    mapped = body.get("model") if probe.protocol != "gemini" else None
    if isinstance(mapped, str) and mapped and mapped != probe.model:
        return mapped, "mapped by the pipeline"
    return probe.model, "the client's"


def resolve(plan: Plan, probe: Probe):  # -> Resolution (raises ir.Error)
    return plan.resolve(
        protocol=probe.protocol,
        model=probe.model,
        headers=probe.headers,
        body=probe.body,
        path_provider=probe.path_provider,
    )
