"""The matcher remembers answers per (model, protocol) only where no `when` condition had a
say: a remembered answer must never differ from a fresh linear scan."""

from __future__ import annotations

import itertools

import jmespath
from hypothesis import given, settings
from hypothesis import strategies as st

from router.compiler.matcher import CACHE_SIZE, MatchSpec, build_matcher
from tests.test_routing import MODELS, WHENS, naive_first, spec_strategy

PROTOCOLS = ["openai-chat", "anthropic", "gemini"]


@settings(max_examples=200, deadline=None)
@given(specs=st.lists(spec_strategy, min_size=0, max_size=8), order=st.randoms())
def test_remembered_answers_agree_with_a_linear_scan(specs: list[MatchSpec], order) -> None:
    compiled = {w: jmespath.compile(w) for w in WHENS if w}
    matcher = build_matcher(list(enumerate(specs)), compiled)
    queries = list(itertools.product(MODELS, PROTOCOLS, (False, True)))
    order.shuffle(queries)
    for model, protocol, flag in queries * 2:  # the second round hits what was remembered
        body = {"flag": flag}
        expected = naive_first(specs, model, protocol, body)
        assert matcher.first(model, protocol, {}, body) == expected


def test_a_when_decision_is_not_remembered() -> None:
    specs = [MatchSpec(when="body.flag"), MatchSpec(models=("gpt-*",))]
    matcher = build_matcher(list(enumerate(specs)), {"body.flag": jmespath.compile("body.flag")})
    assert matcher.first("gpt-4o", "openai-chat", {}, {"flag": True}) == 0
    assert matcher.first("gpt-4o", "openai-chat", {}, {"flag": False}) == 1
    assert matcher.first("gpt-4o", "openai-chat", {}, {"flag": True}) == 0
    assert matcher.cache == {}


def test_the_memory_is_bounded() -> None:
    matcher = build_matcher([(0, MatchSpec(models=("gpt-*",)))], {})
    for i in range(CACHE_SIZE + 100):  # models are whatever clients send
        assert matcher.first(f"gpt-{i}", "openai-chat", {}, {}) == 0
        assert len(matcher.cache) <= CACHE_SIZE
    assert matcher.first("llama", "openai-chat", {}, {}) is None
