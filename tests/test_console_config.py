"""The config-writing rows of the management API (GET/POST /api/config, PUT
/api/providers/{pool}/{id}) and the read-only (GitOps) mode, against a real gateway."""

from __future__ import annotations

import fcntl
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from router.console.config_writes import edit_instance
from router.console.secret_lines import mask_lines
from router.console.secrets import MaskedValueError, mask_text, restore_secrets
from tests.conftest import write_config
from tests.gateway import Gateway
from tests.routercli import router

pytestmark = pytest.mark.timeout(90)

ADMIN_KEY = "admin-key-for-console-tests"
CLIENT_KEY = "client-literal-SECRET-9999"
API_SECRET = "sk-literal-SECRET-1234"
HEADER_SECRET = "hdr-literal-SECRET-5678"
SECRETS = (ADMIN_KEY, CLIENT_KEY, API_SECRET, HEADER_SECRET)
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}

PROVIDERS = f"""\
# pools for the console tests
providers:
  upstream:
    type: openai-custom
    instances:
      - id: literal   # the key is written in the file
        base_url: http://127.0.0.1:9/v1
        api_key: {API_SECRET}
        headers: {{ X-Api-Key: {HEADER_SECRET}, X-Team: blue }}
        enabled: true
      - id: referenced
        base_url: http://127.0.0.1:9/v1
        api_key: ${{CONSOLE_TEST_KEY}}
  echo:
    type: echo
  echo2:
    type: echo   # a second pool, for a route added by the tests
"""

ROUTES = f"""\
default: echo
auth:
  api_keys: [{CLIENT_KEY}]
routes:
  - name: first
    match: {{ model: first-model }}
    to: echo
"""

NEW_ROUTES = (
    ROUTES
    + """\
  - name: added
    match: { model: added-model }
    to: echo2
"""
)


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    return write_config(tmp_path / "config", {"providers.yaml": PROVIDERS, "routes.yaml": ROUTES})


@pytest.fixture
def gateway(config_dir: Path, start_gateway: Callable[..., Gateway]) -> Gateway:
    return start_gateway(config_dir, env={"ADMIN_API_KEY": ADMIN_KEY})


def _no_secret(response: httpx.Response) -> None:
    for secret in SECRETS:
        assert secret not in response.text
    for value in response.headers.values():
        assert all(secret not in value for secret in SECRETS)


def _chat(gateway: Gateway, model: str) -> httpx.Response:
    return httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        timeout=10,
    )


def _wait_generation(gateway: Gateway, generation: str) -> None:
    deadline = time.monotonic() + 10
    while gateway.health()["generation"] != generation:
        assert time.monotonic() < deadline, gateway.health()
        time.sleep(0.1)


def test_get_masks_literal_secrets_and_keeps_references(gateway: Gateway) -> None:
    response = httpx.get(gateway.url + "/api/config", headers=ADMIN, timeout=10)
    assert response.status_code == 200, response.text
    _no_secret(response)
    document = response.json()
    assert set(document["files"]) == {"providers.yaml", "routes.yaml"}
    providers = document["files"]["providers.yaml"]
    assert 'api_key: "***"' in providers
    assert 'X-Api-Key: "***"' in providers and "X-Team: blue" in providers
    assert "api_key: ${CONSOLE_TEST_KEY}" in providers
    assert "# the key is written in the file" in providers
    assert 'api_keys: ["***"]' in document["files"]["routes.yaml"]
    assert document["generation"] == gateway.health()["generation"]
    assert document["read_only"] is False
    compiled = router("compile", "--config-dir", str(gateway.config_dir)).stdout
    assert document["compiled"] == compiled
    assert "api_key: ${CONSOLE_TEST_KEY}" in compiled


def test_post_valid_change_writes_and_reloads(gateway: Gateway, config_dir: Path) -> None:
    before = gateway.health()["generation"]
    assert _chat(gateway, "added-model").headers["x-router-provider"] == "echo"
    response = httpx.post(
        gateway.url + "/api/config",
        json={"files": {"routes.yaml": NEW_ROUTES}},
        headers=ADMIN,
        timeout=20,
    )
    assert response.status_code == 200, response.text
    _no_secret(response)
    document = response.json()
    assert document["written"] == ["routes.yaml"] and document["generation"] != before
    assert (config_dir / "routes.yaml").read_text() == NEW_ROUTES
    _wait_generation(gateway, document["generation"])
    answer = _chat(gateway, "added-model")
    assert answer.status_code == 200
    assert answer.headers["x-router-provider"] == "echo2"
    assert not list(config_dir.glob(".*.tmp"))  # no temporary file left behind


def test_post_with_an_error_is_refused_and_touches_nothing(
    gateway: Gateway, config_dir: Path
) -> None:
    before = (config_dir / "routes.yaml").read_bytes()
    providers_before = (config_dir / "providers.yaml").read_bytes()
    generation = gateway.health()["generation"]
    broken = NEW_ROUTES.replace("to: echo2", "to: nowhere")
    response = httpx.post(
        gateway.url + "/api/config",
        json={"files": {"routes.yaml": broken, "providers.yaml": PROVIDERS + "\n# more\n"}},
        headers=ADMIN,
        timeout=20,
    )
    assert response.status_code == 400, response.text
    _no_secret(response)
    diagnostics = response.json()["diagnostics"]
    assert any(d.startswith("routes.yaml:10:9: ") and "nowhere" in d for d in diagnostics), (
        diagnostics
    )
    assert (config_dir / "routes.yaml").read_bytes() == before
    assert (config_dir / "providers.yaml").read_bytes() == providers_before
    assert gateway.health()["generation"] == generation


def test_masked_secret_sent_back_keeps_the_file_value(gateway: Gateway, config_dir: Path) -> None:
    shown = httpx.get(gateway.url + "/api/config", headers=ADMIN, timeout=10).json()["files"]
    edited = shown["providers.yaml"].replace("X-Team: blue", "X-Team: green")
    response = httpx.post(
        gateway.url + "/api/config",
        json={"files": {"providers.yaml": edited, "routes.yaml": shown["routes.yaml"]}},
        headers=ADMIN,
        timeout=20,
    )
    assert response.status_code == 200, response.text
    _no_secret(response)
    written = (config_dir / "providers.yaml").read_text()
    assert written == PROVIDERS.replace("X-Team: blue", "X-Team: green")
    assert f"api_key: {API_SECRET}" in written and f"X-Api-Key: {HEADER_SECRET}" in written
    assert (config_dir / "routes.yaml").read_text() == ROUTES  # the client key kept too
    _wait_generation(gateway, response.json()["generation"])
    again = httpx.get(gateway.url + "/api/config", headers=ADMIN, timeout=10)
    _no_secret(again)
    assert "X-Team: green" in again.json()["files"]["providers.yaml"]


def test_put_instance_keeps_comments_and_order(gateway: Gateway, config_dir: Path) -> None:
    response = httpx.put(
        gateway.url + "/api/providers/upstream/literal",
        json={"enabled": False, "base_url": "http://127.0.0.1:10/v1", "api_key": "***"},
        headers=ADMIN,
        timeout=20,
    )
    assert response.status_code == 200, response.text
    _no_secret(response)
    written = (config_dir / "providers.yaml").read_text()
    expected = PROVIDERS.replace("enabled: true", "enabled: false").replace(
        "http://127.0.0.1:9/v1\n        api_key: sk", "http://127.0.0.1:10/v1\n        api_key: sk"
    )
    assert written == expected  # comments, key order and the other instances unchanged
    _wait_generation(gateway, response.json()["generation"])
    health = httpx.get(gateway.url + "/provider_health", headers=ADMIN, timeout=10).json()
    literal = health["providers"]["upstream"]["instances"][0]
    assert literal["id"] == "literal" and literal["enabled"] is False


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"base_url": 12}, "base_url"), ({"colour": "red"}, "colour")],
)
def test_put_refuses_an_invalid_change(
    gateway: Gateway, config_dir: Path, fields: dict, message: str
) -> None:
    before = (config_dir / "providers.yaml").read_bytes()
    response = httpx.put(
        gateway.url + "/api/providers/upstream/literal", json=fields, headers=ADMIN, timeout=20
    )
    assert response.status_code == 400, response.text
    _no_secret(response)
    diagnostics = response.json()["diagnostics"]
    assert any(d.startswith("providers.yaml:") and message in d for d in diagnostics), diagnostics
    assert (config_dir / "providers.yaml").read_bytes() == before


def test_put_unknown_pool_or_instance_is_404(gateway: Gateway) -> None:
    for path in ("/api/providers/nope/literal", "/api/providers/upstream/nope"):
        response = httpx.put(gateway.url + path, json={"enabled": False}, headers=ADMIN)
        assert response.status_code == 404, response.text


@pytest.mark.parametrize(
    "name",
    [
        "../routes.yaml",
        "pipelines/../../escape.yaml",
        "/etc/passwd",
        "state.yaml",
        "pipelines/x.txt",
        "pipelines/../routes.yaml",
    ],
)
def test_post_refuses_other_paths(gateway: Gateway, config_dir: Path, name: str) -> None:
    response = httpx.post(
        gateway.url + "/api/config",
        json={"files": {name: "default: echo\n"}},
        headers=ADMIN,
        timeout=10,
    )
    assert response.status_code == 400, response.text
    assert not (config_dir.parent / "escape.yaml").exists()
    assert not (config_dir / "state.yaml").exists()
    assert (config_dir / "routes.yaml").read_text() == ROUTES


def _assert_read_only(gateway: Gateway, config_dir: Path) -> None:
    document = httpx.get(gateway.url + "/api/config", headers=ADMIN, timeout=10).json()
    assert document["read_only"] is True
    before = {p: p.read_bytes() for p in config_dir.rglob("*.yaml")}
    writes = [
        httpx.post(
            gateway.url + "/api/config", json={"files": {"routes.yaml": NEW_ROUTES}}, headers=ADMIN
        ),
        httpx.put(
            gateway.url + "/api/providers/upstream/literal", json={"enabled": False}, headers=ADMIN
        ),
    ]
    for response in writes:
        assert response.status_code == 409, response.text
        assert "config is managed in git" in response.text
    assert {p: p.read_bytes() for p in config_dir.rglob("*.yaml")} == before


def test_read_only_from_routes_yaml(tmp_path: Path, start_gateway: Callable[..., Gateway]) -> None:
    routes = ROUTES + "admin: { read_only: true }\n"
    directory = write_config(tmp_path / "ro", {"providers.yaml": PROVIDERS, "routes.yaml": routes})
    gateway = start_gateway(directory, env={"ADMIN_API_KEY": ADMIN_KEY})
    _assert_read_only(gateway, directory)
    compiled = router("compile", "--config-dir", str(directory)).stdout
    assert "admin:\n  read_only: true\n" in compiled


def test_read_only_from_the_environment(
    config_dir: Path, start_gateway: Callable[..., Gateway]
) -> None:
    gateway = start_gateway(
        config_dir, env={"ADMIN_API_KEY": ADMIN_KEY, "ROUTER_ADMIN_READ_ONLY": "1"}
    )
    _assert_read_only(gateway, config_dir)
    assert "admin:" not in router("compile", "--config-dir", str(config_dir)).stdout


def test_admin_key_required(gateway: Gateway, config_dir: Path) -> None:
    client = {"Authorization": f"Bearer {CLIENT_KEY}"}
    attempts = [
        ("GET", "/api/config", None),
        ("POST", "/api/config", {"files": {"routes.yaml": NEW_ROUTES}}),
        ("PUT", "/api/providers/upstream/literal", {"enabled": False}),
    ]
    for method, path, body in attempts:
        for headers in ({}, client, {"Authorization": "Bearer wrong"}):
            response = httpx.request(method, gateway.url + path, json=body, headers=headers)
            assert response.status_code == 401, (method, path, response.text)
            _no_secret(response)
    assert (config_dir / "routes.yaml").read_text() == ROUTES


def test_get_masks_secrets_of_a_file_that_does_not_parse(
    gateway: Gateway, config_dir: Path
) -> None:
    broken = PROVIDERS.replace("providers:\n", "providers: [\n") + "  url: http://u:pw-SECRET@h\n"
    (config_dir / "providers.yaml").write_text(broken)
    response = httpx.get(gateway.url + "/api/config", headers=ADMIN, timeout=10)
    assert response.status_code == 200, response.text
    _no_secret(response)
    assert "pw-SECRET" not in response.text
    shown = response.json()["files"]["providers.yaml"]
    assert "api_key: ${CONSOLE_TEST_KEY}" in shown and "X-Api-Key" in shown


# ---- one masking for every view of a file, and the way back (router.console.secrets)

ENV_SECRET = "sk-test-env-SECRET-4242"
ROUTE_TESTS = f"""\
env:
  OPENAI_API_KEY: {ENV_SECRET}   # a secret-looking variable
  REGION: eu
cases:
  - name: first
    request:
      model: first-model
      headers: {{ authorization: "Bearer {CLIENT_KEY}" }}
    expect: {{ route: first }}
"""


def test_route_tests_secrets_are_masked_and_kept_on_a_round_trip(
    gateway: Gateway, config_dir: Path
) -> None:
    (config_dir / "routes.test.yaml").write_text(ROUTE_TESTS)
    response = httpx.get(gateway.url + "/api/config", headers=ADMIN, timeout=10)
    _no_secret(response)
    assert ENV_SECRET not in response.text
    shown = response.json()["files"]["routes.test.yaml"]
    assert 'OPENAI_API_KEY: "***"   # a secret-looking variable' in shown
    assert 'authorization: "***"' in shown and "REGION: eu" in shown
    edited = shown.replace("REGION: eu", "REGION: us")
    response = httpx.post(
        gateway.url + "/api/config",
        json={"files": {"routes.test.yaml": edited}},
        headers=ADMIN,
        timeout=20,
    )
    assert response.status_code == 200, response.text
    _no_secret(response)
    written = (config_dir / "routes.test.yaml").read_text()
    assert written == ROUTE_TESTS.replace("REGION: eu", "REGION: us")


def test_post_refuses_a_masked_value_that_stands_for_no_secret(
    gateway: Gateway, config_dir: Path
) -> None:
    shown = httpx.get(gateway.url + "/api/config", headers=ADMIN, timeout=10).json()["files"]
    # a new instance copied from the shown one: its `***` is no secret of the file
    copied = shown["providers.yaml"].replace(
        "  echo:\n", '      - id: copy\n        api_key: "***"\n  echo:\n', 1
    )
    response = httpx.post(
        gateway.url + "/api/config",
        json={"files": {"providers.yaml": copied}},
        headers=ADMIN,
        timeout=20,
    )
    assert response.status_code == 400, response.text
    _no_secret(response)
    assert "instances[id=copy].api_key" in response.json()["error"]["message"]
    assert (config_dir / "providers.yaml").read_text() == PROVIDERS


FILES = {
    "providers.yaml": """\
x-base: &base
  api_key: &key sk-anchored-SECRET   # an anchor the second instance uses
providers:
  upstream:
    type: openai-custom
    first_token_timeout: 30s
    instances:
      - id: one
        <<: *base
        base_url: http://ops:url-SECRET@127.0.0.1:9/v1?api_key=query-SECRET&x=1
        headers: { X-Max-Tokens: max-tokens-SECRET, X-Team: blue }
        env: { TOKEN_FILE: token-file-SECRET }
        credentials: configs/creds.json
        password: password-SECRET
        description: "mirror at http://u:desc-SECRET@example.com"
      - id: two
        api_key: *key
        base_urls: [http://a:list-SECRET@h1/v1, "${MIRROR_URL}"]
        client_secret: ${OAUTH_CLIENT:-default-SECRET}
""",
    "routes.yaml": """\
default: echo
auth:
  api_keys: [client-one-SECRET, "${CLIENT_KEY}", client-two-SECRET]
  admin_keys:
    - admin-SECRET
routes:
  - name: teams
    match: { headers: { authorization: Bearer match-SECRET } }
    to: echo
""",
    "routes.test.yaml": """\
env: { OPENAI_API_KEY: env-SECRET, MAX_TOKENS: tokens-env-SECRET, REGION: eu }
cases:
  - name: keyed
    request:
      headers: { authorization: Bearer header-SECRET }
      body: { api_key: body-SECRET, max_tokens: 5 }
    expect: { route: first }
""",
    "pipelines/team.yaml": """\
name: team
upstream:
  - set: { path: metadata.user_token, value: upstream-SECRET }
  - rename: { max_tokens: max_completion_tokens }
headers:
  - set: { path: authorization, value: Bearer set-SECRET }
  - set: { x-max-tokens: header-tokens-SECRET, x-team: "${TEAM:-platform}" }
  - map:
      path: x-api-key
      values:
        client-key-one-SECRET: upstream-one-SECRET
        client-key-two-SECRET: upstream-two-SECRET
""",
}
SHOWN_AS_WRITTEN = {  # what no rule hides
    "providers.yaml": [
        "first_token_timeout: 30s",
        "X-Team: blue",
        "credentials: configs/creds.json",
        '"${MIRROR_URL}"',
        "# an anchor the second instance uses",
    ],
    "routes.yaml": ['"${CLIENT_KEY}"', "- name: teams"],
    "routes.test.yaml": ["REGION: eu", "max_tokens: 5"],
    "pipelines/team.yaml": [
        "rename: { max_tokens: max_completion_tokens }",
        'x-team: "${TEAM:-platform}"',
        "path: x-api-key",
    ],
}


@pytest.mark.parametrize("file", sorted(FILES))
def test_one_masking_hides_what_either_rule_hid_and_restores_it(file: str) -> None:
    text = FILES[file]
    shown = mask_text(file, text)
    assert "SECRET" not in shown, shown
    assert shown.count("\n") == text.count("\n")
    for kept in SHOWN_AS_WRITTEN[file]:
        assert kept in shown, kept
    assert restore_secrets(file, text, shown) == text
    # the same text broken mid-edit: masked line by line, hiding as much
    broken = mask_lines(text + "oops: [\n")
    assert "SECRET" not in broken, broken
    for kept in SHOWN_AS_WRITTEN[file]:
        assert kept in broken, kept


def test_masked_anchors_aliases_urls_and_defaults_are_shown_in_place() -> None:
    shown = mask_text("providers.yaml", FILES["providers.yaml"])
    assert 'api_key: &key "***"   # an anchor' in shown and "api_key: *key" in shown
    assert 'base_url: "http://ops:***@127.0.0.1:9/v1?api_key=***&x=1"' in shown
    assert 'client_secret: "${OAUTH_CLIENT:-***}"' in shown
    pipeline = mask_text("pipelines/team.yaml", FILES["pipelines/team.yaml"])
    assert '"***": "***"' in pipeline  # a map table's keys are the client's keys


def test_restore_follows_instances_and_keys_not_positions() -> None:
    """An instance or a client key added before one, or an instance renamed, moves no
    secret."""
    text = FILES["providers.yaml"]
    shown = mask_text("providers.yaml", text)
    added = "      - id: zero\n        api_key: sk-new-SECRET\n"
    moved = shown.replace("      - id: one\n", added + "      - id: one\n")
    restored = restore_secrets("providers.yaml", text, moved)
    assert restored == text.replace("      - id: one\n", added + "      - id: one\n")
    renamed = restore_secrets("providers.yaml", text, shown.replace("id: two", "id: three"))
    assert renamed == text.replace("id: two", "id: three")  # its secrets go with it
    routes = FILES["routes.yaml"]
    shown = mask_text("routes.yaml", routes)
    assert 'api_keys: ["***", "${CLIENT_KEY}", "***"]' in shown
    first = shown.replace('api_keys: ["***"', 'api_keys: [client-new-SECRET, "***"')
    assert restore_secrets("routes.yaml", routes, first) == routes.replace(
        "api_keys: [client-one", "api_keys: [client-new-SECRET, client-one"
    )
    emptied = shown.replace('["***", "${CLIENT_KEY}", "***"]', '["${CLIENT_KEY}"]')
    assert "client-" not in restore_secrets("routes.yaml", routes, emptied).split("admin")[0]


@pytest.mark.parametrize(
    ("file", "change", "message"),
    [
        (
            "providers.yaml",
            ("      - id: two\n", '      - id: new\n        api_key: "***"\n      - id: two\n'),
            "instances[id=new].api_key",
        ),
        ("routes.yaml", ('["***", "${CLIENT_KEY}", "***"]', '["***"]'), "1 of the 2 values"),
        ("pipelines/team.yaml", ('"***": "***"\n', ""), "values"),
    ],
)
def test_restore_refuses_what_it_cannot_put_back(
    file: str, change: tuple[str, str], message: str
) -> None:
    text = FILES[file]
    shown = mask_text(file, text)
    assert change[0] in shown
    with pytest.raises(MaskedValueError, match=re.escape(message)):
        restore_secrets(file, text, shown.replace(change[0], change[1], 1))
    with pytest.raises(MaskedValueError, match="does not parse"):
        restore_secrets(file, text + "oops: [\n", shown)


def test_put_keeps_a_masked_header_of_the_instance() -> None:
    fields = {"headers": {"X-Api-Key": "***", "X-Team": "green"}}
    written = edit_instance(PROVIDERS, "upstream", "literal", fields)
    assert HEADER_SECRET in written and "X-Team: green" in written
    assert "***" not in written and API_SECRET in written


def test_concurrent_writes_through_two_workers_are_serialized(
    config_dir: Path, start_gateway: Callable[..., Gateway]
) -> None:
    """Writes taken by different workers run one at a time (a lock file in the state dir,
    never in the config dir): every write is checked against what the previous one left,
    each answers, the file ends as one of them, and the console gets a `config` event."""
    gateway = start_gateway(config_dir, env={"ADMIN_API_KEY": ADMIN_KEY}, workers=2)
    variants = [NEW_ROUTES.replace("added-model", f"added-{n}") for n in range(8)]

    def write(text: str) -> int:
        with httpx.Client(timeout=30) as client:  # a connection each: both workers take some
            response = client.post(
                gateway.url + "/api/config", json={"files": {"routes.yaml": text}}, headers=ADMIN
            )
        return response.status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(write, variants))
    assert statuses == [200] * len(variants)
    assert (config_dir / "routes.yaml").read_text() in variants
    lock = gateway.state_dir / "config-write.lock"
    assert not [p for p in config_dir.iterdir() if p.name.endswith(".lock")]
    with open(lock, "a") as held:  # another writer of the server holds the lock: wait
        fcntl.flock(held, fcntl.LOCK_EX)
        with ThreadPoolExecutor(max_workers=1) as pool:
            waiting = pool.submit(write, variants[0])
            time.sleep(1.0)
            assert not waiting.done()
            fcntl.flock(held, fcntl.LOCK_UN)
            assert waiting.result(timeout=30) == 200
    with httpx.stream(
        "GET",
        gateway.url + "/api/events",
        headers={**ADMIN, "Last-Event-ID": "0.0"},
        timeout=httpx.Timeout(10, read=5),
    ) as events:
        kinds = []
        for line in events.iter_lines():
            if line.startswith("event: "):
                kinds.append(line.removeprefix("event: "))
            if kinds.count("config") == len(variants):
                break
    assert kinds.count("config") == len(variants)
