"""Routing semantics, table-driven: path prefix > override header > first matching route >
default; globs, lists, `protocol`, `when`; the Claude Code aliases; override errors."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.compiler import compile_config
from router.compiler.glob import glob_test
from router.compiler.matcher import MatchSpec, build_matcher, truthy
from router.compiler.plan import Plan
from router.protocols import ir
from tests.conftest import write_config
from tests.routercli import REPO, copy_shipped

PROVIDERS = """
providers:
  openai-custom:
    type: openai-custom
    instances: [{id: openai-1, api_key: sk-test}]
  claude-custom:
    type: claude-custom
    instances: [{id: claude-1, api_key: sk-test}]
  claudeCode-custom:
    type: claudeCode-custom
    instances: [{id: cli, command: claude}]
  gemini-api:
    type: gemini-api
    instances: [{id: gemini-1, api_key: "${GEMINI_API_KEY}"}]
  echo:
    type: echo
"""

ROUTES = """
default: ${MODEL_PROVIDER:-echo}
overrides: { path_prefix: true, header: Model-Provider }
routes:
  - name: claude-code
    match: { model: [opus, sonnet, haiku] }
    to: [claudeCode-custom, echo]
  - name: long-prompts
    match: { when: "length(body.messages || `[]`) > `3`" }
    to: { provider: claude-custom, model: claude-sonnet-4-5 }
  - name: responses
    match: { model: "gpt-*", protocol: openai-responses }
    to: echo
  - name: vip
    match: { model: "gpt-4o", when: "headers.\\"x-tier\\" == 'vip'" }
    to: { provider: claude-custom, model: claude-opus-4-1 }
  - name: gpt
    match: { model: ["gpt-*", "o[134]-mini", chatgpt-4o-latest] }
    to:
      - openai-custom
      - { provider: claude-custom, model: claude-sonnet-4-5 }
  - name: gemini-needs-key
    match: { model: "gemini-*" }
    to: gemini-api
  - name: suffix
    match: { model: "*-preview" }
    to: claude-custom
  - name: exact-later
    match: { model: llama }
    to: openai-custom
"""


def plan_for(directory: Path, env: dict[str, str] | None = None) -> Plan:
    plan, diagnostics = compile_config(directory, env=env or {})
    assert plan is not None, "\n".join(map(str, diagnostics))
    return plan


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_config(
        tmp_path_factory.mktemp("routing"), {"providers.yaml": PROVIDERS, "routes.yaml": ROUTES}
    )


def resolve(plan: Plan, **request: Any) -> tuple[str, str, list[str], str | None]:
    resolution = plan.resolve(
        protocol=request.get("protocol", "openai-chat"),
        model=request.get("model", "gpt-4o"),
        headers=request.get("headers", {}),
        body=request.get("body", {}),
        path_provider=request.get("path"),
    )
    route = resolution.route
    return (
        resolution.via,
        route.name,
        [t.provider for t in route.targets],
        route.targets[0].model,
    )


MANY = {"messages": [{"role": "user", "content": "hi"}] * 5}
CODE = ["claudeCode-custom", "echo"]
GPT = ["openai-custom", "claude-custom"]
ECHO = ["echo"]
VIP = {"x-tier": "vip"}

# (case id, request, (via, route, chain, model of the first target))
CASES = [
    ("exact-in-list", {"model": "opus"}, ("route", "claude-code", CODE, None)),
    ("claude-code-sonnet", {"model": "sonnet"}, ("route", "claude-code", CODE, None)),
    (
        "claude-code-haiku",
        {"model": "haiku", "protocol": "anthropic"},
        ("route", "claude-code", CODE, None),
    ),
    ("glob", {"model": "gpt-4.1"}, ("route", "gpt", GPT, None)),
    ("glob-class", {"model": "o3-mini"}, ("route", "gpt", GPT, None)),
    ("glob-class-miss", {"model": "o2-mini"}, ("default", "default", ECHO, None)),
    ("exact-in-glob-list", {"model": "chatgpt-4o-latest"}, ("route", "gpt", GPT, None)),
    ("suffix-glob", {"model": "llama-4-preview"}, ("route", "suffix", ["claude-custom"], None)),
    ("exact-after-globs", {"model": "llama"}, ("route", "exact-later", ["openai-custom"], None)),
    (
        "protocol-condition",
        {"model": "gpt-4o", "protocol": "openai-responses"},
        ("route", "responses", ECHO, None),
    ),
    (
        "when-on-headers",
        {"model": "gpt-4o", "headers": VIP},
        ("route", "vip", ["claude-custom"], "claude-opus-4-1"),
    ),
    (
        "when-and-model-both-needed",
        {"model": "gpt-4.1", "headers": VIP},
        ("route", "gpt", GPT, None),
    ),
    (
        "when-on-body",
        {"model": "gpt-4o", "body": MANY},
        ("route", "long-prompts", ["claude-custom"], "claude-sonnet-4-5"),
    ),
    (
        "earlier-exact-beats-when",
        {"model": "opus", "body": MANY},
        ("route", "claude-code", CODE, None),
    ),
    ("inactive-route-is-skipped", {"model": "gemini-2.5-pro"}, ("default", "default", ECHO, None)),
    ("no-match-default", {"model": "mistral-large"}, ("default", "default", ECHO, None)),
    (
        "header-beats-route",
        {"model": "opus", "headers": {"model-provider": "openai-custom"}},
        ("header", "provider:openai-custom", ["openai-custom"], None),
    ),
    (
        "header-to-unconfigured",
        {"model": "x", "headers": {"model-provider": "gemini-api"}},
        ("header", "provider:gemini-api", ["gemini-api"], None),
    ),
    (
        "empty-header-ignored",
        {"model": "opus", "headers": {"model-provider": ""}},
        ("route", "claude-code", CODE, None),
    ),
    (
        "path-beats-header",
        {"model": "opus", "path": "claude-custom", "headers": {"model-provider": "openai-custom"}},
        ("path", "provider:claude-custom", ["claude-custom"], None),
    ),
    (
        "path-beats-route",
        {"model": "gpt-4o", "path": "echo"},
        ("path", "provider:echo", ECHO, None),
    ),
]


@pytest.mark.parametrize(
    ("request_", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_resolution_table(config: Path, request_: dict, expected: tuple) -> None:
    assert resolve(plan_for(config), **request_) == expected


def test_model_provider_sets_the_default(config: Path) -> None:
    plan = plan_for(config, {"MODEL_PROVIDER": "claude-custom"})
    assert resolve(plan, model="mistral-large") == ("default", "default", ["claude-custom"], None)
    assert plan.default == "claude-custom"


def test_a_secret_brings_an_inactive_route_alive(config: Path) -> None:
    plan = plan_for(config, {"GEMINI_API_KEY": "g-key"})
    found = resolve(plan, model="gemini-2.5-pro")
    assert found[:3] == ("route", "gemini-needs-key", ["gemini-api"])


@pytest.mark.parametrize(
    ("request_", "status", "kind"),
    [
        ({"path": "nope"}, 404, "not_found"),
        ({"headers": {"model-provider": "nope"}}, 400, "invalid_request"),
        ({"path": "nope", "headers": {"model-provider": "echo"}}, 404, "not_found"),
    ],
    ids=["unknown-path-provider", "unknown-header-provider", "path-checked-first"],
)
def test_unknown_override_is_an_error(config: Path, request_: dict, status: int, kind: str) -> None:
    with pytest.raises(ir.Error) as caught:
        resolve(plan_for(config), **request_)
    assert (caught.value.status, caught.value.kind) == (status, kind)
    assert "nope" in caught.value.message


def test_overrides_can_be_disabled(tmp_path: Path) -> None:
    routes = "default: echo\noverrides: { path_prefix: false, header: false }\n"
    plan = plan_for(write_config(tmp_path, {"providers.yaml": PROVIDERS, "routes.yaml": routes}))
    assert plan.header is None
    assert resolve(plan, headers={"model-provider": "nope"})[0] == "default"
    with pytest.raises(ir.Error) as caught:
        resolve(plan, path="echo")
    assert caught.value.status == 404


def test_custom_override_header_is_lower_cased(tmp_path: Path) -> None:
    routes = "default: echo\noverrides: { header: X-Route-To }\n"
    plan = plan_for(write_config(tmp_path, {"providers.yaml": PROVIDERS, "routes.yaml": routes}))
    assert plan.header == "x-route-to"
    found = resolve(plan, headers={"x-route-to": "claude-custom"})
    assert found[:2] == ("header", "provider:claude-custom")


def test_route_level_settings_reach_the_plan(tmp_path: Path) -> None:
    routes = """
    default: echo
    routes:
      - name: gpt
        match: { model: "gpt-*" }
        to: [openai-custom, { provider: claude-custom, pipeline: null }]
        pipeline: p
        strict: true
        retry_on: [429, 5xx]
        max_attempts: 3
    """
    pipeline = "request:\n  - set: { x: 1 }\n"
    files = {"providers.yaml": PROVIDERS, "routes.yaml": routes, "pipelines/p.yaml": pipeline}
    directory = write_config(tmp_path, files)
    route = plan_for(directory).routes[0]
    assert (route.strict, route.retry_on, route.max_attempts) == (True, frozenset({429, "5xx"}), 3)
    assert route.targets[0].pipeline is not None and route.targets[0].pipeline.name == "p"
    assert route.targets[1].pipeline is None
    assert route.source == "routes.yaml:3:5"


def test_shipped_config_routes_everything_to_echo_without_credentials(tmp_path: Path) -> None:
    plan = plan_for(copy_shipped(tmp_path / "shipped"))
    for protocol, model in [
        ("openai-chat", "gpt-4o"),
        ("openai-responses", "o3"),
        ("anthropic", "claude-sonnet-4-5"),
        ("gemini", "gemini-2.5-pro"),
        ("openai-chat", "anything"),
    ]:
        chain = resolve(plan, protocol=protocol, model=model)[2]
        assert chain == ["echo"], (protocol, model)
    # the Claude Code aliases go to the CLI, with echo as its failover
    for alias in ("opus", "sonnet", "haiku"):
        assert resolve(plan, model=alias)[1:3] == ("claude-code", ["claudeCode-custom", "echo"])


def test_claude_code_rule_lives_in_the_shipped_routes_yaml() -> None:
    text = (REPO / "routes.yaml").read_text()
    assert "match: { model: [opus, sonnet, haiku] }" in text
    assert "to: [claudeCode-custom, echo]" in text


# --- the compiled matcher agrees with a plain first-match scan -------------------------

MODELS = ["gpt-4o", "gpt-4o-mini", "o3", "opus", "claude-3", "x", "gemini-pro", "gpt-4.1", ""]
PATTERNS = ["gpt-*", "gpt-4o", "o?", "opus", "*", "claude-*", "*-mini", "gpt-[45]*", "x", "g*o"]
WHENS = [None, "body.flag", "model == 'opus'", "`false`"]


def naive_first(specs: list[MatchSpec], model: str, protocol: str, body: dict) -> int | None:
    import jmespath

    for index, spec in enumerate(specs):
        if spec.models and not any(glob_test(p)(model) for p in spec.models):
            continue
        if spec.protocols and protocol not in spec.protocols:
            continue
        context = {"model": model, "protocol": protocol, "headers": {}, "body": body}
        if spec.when and not truthy(jmespath.search(spec.when, context)):
            continue
        return index
    return None


spec_strategy = st.builds(
    MatchSpec,
    models=st.lists(st.sampled_from(PATTERNS), max_size=3, unique=True).map(tuple),
    protocols=st.sampled_from([(), ("anthropic",), ("openai-chat", "gemini")]),
    when=st.sampled_from(WHENS),
)


@settings(max_examples=300, deadline=None)
@given(
    specs=st.lists(spec_strategy, min_size=0, max_size=8),
    model=st.sampled_from(MODELS),
    protocol=st.sampled_from(["openai-chat", "anthropic", "gemini"]),
    flag=st.booleans(),
)
def test_matcher_agrees_with_a_linear_scan(
    specs: list[MatchSpec], model: str, protocol: str, flag: bool
) -> None:
    import jmespath

    compiled = {w: jmespath.compile(w) for w in WHENS if w}
    matcher = build_matcher(list(enumerate(specs)), compiled)
    body = {"flag": flag}
    assert matcher.first(model, protocol, {}, body) == naive_first(specs, model, protocol, body)


def test_matcher_indexes_instead_of_scanning() -> None:
    rng = random.Random(7)
    specs = [MatchSpec(models=(f"model-{i}",)) for i in range(5000)]
    specs += [MatchSpec(models=(f"family-{i}-*",)) for i in range(5000)]
    rng.shuffle(specs)
    matcher = build_matcher(list(enumerate(specs)), {})
    assert len(matcher.exact) == 5000
    assert matcher.always == ()
    # a model only meets the globs filed under its own literal prefixes
    buckets = [e for p, e in matcher.by_prefix.items() if "family-42-x".startswith(p)]
    assert sum(map(len, buckets)) == 1


@settings(max_examples=300, deadline=None)
@given(specs=st.lists(spec_strategy, min_size=1, max_size=8))
def test_shadow_warnings_are_sound(specs: list[MatchSpec]) -> None:
    """Whatever `router check` calls shadowed really never matches."""
    from router.compiler.shadow import find_shadows

    requests = [
        (model, protocol, {"flag": flag})
        for model in [*MODELS, "gpt-4o-mini-x", "ox", "claude-"]
        for protocol in ("openai-chat", "anthropic", "gemini")
        for flag in (True, False)
    ]
    for shadow in find_shadows(specs):
        assert shadow.by < shadow.route
        for model, protocol, body in requests:
            if shadow.pattern is not None and not glob_test(shadow.pattern)(model):
                continue
            assert naive_first(specs, model, protocol, body) != shadow.route, (shadow, model)
