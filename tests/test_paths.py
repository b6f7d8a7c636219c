"""The endpoint table (`router.protocols.paths`): every endpoint matches its own path,
with and without a provider prefix; near misses match nothing; the protocol of a path
before routing, and of the ambiguous model list."""

from __future__ import annotations

import pytest

from router.protocols import paths
from router.protocols.paths import Endpoint

MODEL = "gemini-2.5-flash"
IDS = [e.path for e in paths.ENDPOINTS]


def _called(endpoint: Endpoint) -> str:
    return endpoint.path.replace("{model}", MODEL)


def _model(endpoint: Endpoint) -> str | None:
    return MODEL if "{model}" in endpoint.path else None


@pytest.mark.parametrize("endpoint", paths.ENDPOINTS, ids=IDS)
def test_match_own_path(endpoint: Endpoint) -> None:
    found = paths.match(_called(endpoint))
    assert found is not None
    assert found.endpoint == endpoint
    assert found.model == _model(endpoint)
    assert found.provider is None


@pytest.mark.parametrize("endpoint", paths.ENDPOINTS, ids=IDS)
def test_match_under_provider_prefix(endpoint: Endpoint) -> None:
    found = paths.match("/my-pool" + _called(endpoint))
    assert found is not None
    assert found.endpoint == endpoint
    assert found.model == _model(endpoint)
    assert found.provider == "my-pool"


@pytest.mark.parametrize(
    "path",
    [
        "/v1/chat/completions/extra",
        "/v1beta/models/a/b:generateContent",
        "/v1beta/models/:generateContent",
        "/v1beta/models/x:unknownAction",
        "/",
    ],
)
def test_no_match(path: str) -> None:
    assert paths.match(path) is None


@pytest.mark.parametrize("endpoint", paths.ENDPOINTS, ids=IDS)
def test_protocol_for_own_path(endpoint: Endpoint) -> None:
    assert paths.protocol_for_path(_called(endpoint)) == endpoint.protocol


def test_protocol_for_unknown_gemini_path() -> None:
    assert paths.protocol_for_path("/v1beta/unknown") == "gemini"


def test_protocol_for_unknown_path_with_anthropic_header() -> None:
    headers = {"anthropic-version": "2023-06-01"}
    assert paths.protocol_for_path("/nope", headers) == "anthropic"


def test_protocol_for_unknown_path_defaults() -> None:
    assert paths.protocol_for_path("/nope") == paths.DEFAULT_PROTOCOL
    assert paths.protocol_for_path("/nope", {}) == paths.DEFAULT_PROTOCOL
    assert paths.protocol_for_path("/nope", {"accept": "*/*"}) == paths.DEFAULT_PROTOCOL


@pytest.mark.parametrize(
    ("path", "headers", "query", "expected"),
    [
        ("/v1beta/models", {}, {}, "gemini"),
        ("/my-pool/v1beta/models", {}, {}, "gemini"),
        ("/v1/models", {"x-goog-api-key": "k"}, {}, "gemini"),
        ("/v1/models", {}, {"key": "k"}, "gemini"),
        ("/v1/models", {"anthropic-version": "2023-06-01"}, {}, "anthropic"),
        ("/v1/models", {}, {}, paths.DEFAULT_PROTOCOL),
        ("/v1/models", {"authorization": "Bearer k"}, {"limit": "5"}, paths.DEFAULT_PROTOCOL),
    ],
)
def test_list_protocol(
    path: str, headers: dict[str, str], query: dict[str, str], expected: str
) -> None:
    assert paths.list_protocol(path, headers, query) == expected


def test_default_protocol_is_not_gemini_or_anthropic() -> None:
    assert paths.DEFAULT_PROTOCOL not in ("gemini", "anthropic")
