"""The console's read-only admin rows (issue 16) against a real `router serve`: providers
with their config, health and today's usage, the models each pool advertises, the service
mode, and the config dir's files (list, view redacted, delete credentials, zip of the
YAML). Every answer is searched for the configured secrets: none may appear."""

from __future__ import annotations

import io
import json
import socket
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import write_config
from tests.fakes import FakeUpstream
from tests.gateway import Gateway

CLIENT_KEY = "rk-console-client-5d2a91f07c3e"
ADMIN_KEY = "rk-console-admin-c81b4e6d2f90"
LITERAL_KEY = "sk-literal-xyz"
BETA_KEY = "sk-beta-from-env-4f1e0a9c"
HEADER_SECRET = "hdr-secret-77ab03c5e1"
URL_PASSWORD = "url-pass-0b9d4e2a"
CLIENT_SECRET = "GOCSPX-literal-9e3c1a7f"
PIPE_SECRET = "pipe-literal-secret-31c8"
ACCESS_TOKEN = "ya29.a0AfB_console-access-8c1f2d"
REFRESH_TOKEN = "1//0gconsole-refresh-5b7e9a"
ID_TOKEN = "eyJhbGciOiJSUzI1NiJ9.console-id-token.sig"
OUTSIDE_TOKEN = "outside-token-d93a1c5b"
SECRETS = (
    CLIENT_KEY,
    ADMIN_KEY,
    LITERAL_KEY,
    BETA_KEY,
    HEADER_SECRET,
    URL_PASSWORD,
    CLIENT_SECRET,
    PIPE_SECRET,
    ACCESS_TOKEN,
    REFRESH_TOKEN,
    ID_TOKEN,
    OUTSIDE_TOKEN,
)
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
CLIENT = {"authorization": f"Bearer {CLIENT_KEY}"}
CREDS = "configs/gemini/oauth_creds.json"
EXPIRY_MS = 1_893_456_000_000  # 2030-01-01T00:00:00Z

READ_ENDPOINTS = (
    "/api/providers",
    "/api/providers/alpha",
    "/api/providers/openai-custom",
    "/api/provider-models",
    "/api/provider-models/alpha",
    "/api/service-mode",
    "/api/upload-configs",
    "/api/upload-configs/view/providers.yaml",
    f"/api/upload-configs/view/{CREDS}",
    "/api/upload-configs/download-all",
)


def no_secret(body: bytes) -> None:
    text = body.decode("utf-8", errors="replace")
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} in an answer"


def checked(response: httpx.Response) -> httpx.Response:
    """The response, once its body (and every file of a zip) shows no secret."""
    no_secret(response.content)
    if response.headers.get("content-type", "").startswith("application/zip"):
        with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
            for name in archive.namelist():
                no_secret(archive.read(name))
    return response


def get(gateway: Gateway, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return checked(httpx.get(gateway.url + path, headers=ADMIN if headers is None else headers))


def raw_request(gateway: Gateway, method: str, target: str) -> tuple[int, bytes]:
    """A request whose target goes out byte for byte (httpx would normalize `..`)."""
    head = (
        f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\n"
        f"Authorization: Bearer {ADMIN_KEY}\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(head.encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    answer = b"".join(chunks)
    status = int(answer.split(b" ", 2)[1])
    body = answer.partition(b"\r\n\r\n")[2]
    no_secret(body)
    return status, body


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def credentials() -> dict[str, Any]:
    """gemini-cli's oauth_creds.json after a sign-in, with the account fields the console
    keeps."""
    return {
        "access_token": ACCESS_TOKEN,
        "refresh_token": REFRESH_TOKEN,
        "id_token": ID_TOKEN,
        "token_type": "Bearer",
        "scope": "https://www.googleapis.com/auth/cloud-platform openid",
        "expiry_date": EXPIRY_MS,
        "email": "operator@example.com",
        "project_id": "console-project-123",
    }


def make_config(directory: Path, upstream: str) -> Path:
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    write_config(
        directory,
        {
            "providers.yaml": f"""
                # the console test's pools: two of one type, an OAuth one
                providers:
                  alpha:
                    type: openai-custom
                    models: [gpt-a]
                    health: {{ max_errors: 5 }}
                    first_token_timeout: 30s
                    instances:
                      - id: alpha-1
                        base_url: {upstream}/v1
                        api_key: {LITERAL_KEY}   # a literal secret
                        headers: {{ X-Team: blue, X-Api-Key: {HEADER_SECRET} }}
                        proxy: false
                      - id: alpha-2
                        base_url: http://ops:{URL_PASSWORD}@127.0.0.1:9/v1
                        api_key: ${{CONSOLE_UNSET_KEY}}
                  beta:
                    type: openai-custom
                    models: [gpt-b]
                    health: {{ max_errors: 5 }}
                    instances:
                      - id: beta-1
                        base_url: {dead}
                        api_key: ${{CONSOLE_BETA_KEY}}
                        proxy: false
                  echo:
                    type: echo
                  gcli:
                    type: gemini-cli-oauth
                    instances:
                      - id: gcli-1
                        credentials: {CREDS}
                        client_id: console-client.apps.googleusercontent.com
                        client_secret: {CLIENT_SECRET}
                        base_url: {dead}
                        proxy: false
                      - id: gcli-outside
                        credentials: configs/outside.json
                        base_url: {dead}
                        proxy: false
                """,
            "routes.yaml": """
                default: alpha
                routes:
                  - name: beta
                    match: { model: gpt-b }
                    to: [beta]
                    pipeline: team
                """,
            "pipelines/team.yaml": f"""
                name: team
                upstream:
                  - rename: {{ max_tokens: max_completion_tokens }}
                headers:
                  - set: {{ path: x-api-token, value: {PIPE_SECRET} }}
                  - set: {{ x-team: "${{ROUTER_TEAM:-platform}}" }}
                """,
        },
    )
    creds = directory / CREDS
    creds.parent.mkdir(parents=True, exist_ok=True)
    creds.write_text(json.dumps(credentials(), indent=2))
    creds.chmod(0o600)
    # a credentials "file" that is a symlink to a file outside the config dir
    outside = directory.parent / f"{directory.name}-outside.json"
    outside.write_text(json.dumps({"access_token": OUTSIDE_TOKEN}))
    (directory / "configs/outside.json").symlink_to(outside)
    return directory


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream.start(api_key=LITERAL_KEY) as upstream:
        yield upstream


ENV = {"REQUIRED_API_KEY": CLIENT_KEY, "ADMIN_API_KEY": ADMIN_KEY, "CONSOLE_BETA_KEY": BETA_KEY}


@pytest.fixture(scope="module")
def gateway(fake: FakeUpstream, tmp_path_factory) -> Iterator[Gateway]:
    directory = make_config(tmp_path_factory.mktemp("console") / "config", fake.url)
    with Gateway(directory, env=ENV) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def traffic(gateway: Gateway) -> None:
    """Two answered requests to alpha and one failed to beta (its upstream is down)."""
    for model in ("gpt-a", "gpt-a", "gpt-b"):
        response = httpx.post(
            gateway.url + "/v1/chat/completions",
            headers=CLIENT,
            json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
            timeout=20,
        )
        assert response.status_code == (200 if model == "gpt-a" else 502), response.text
        checked(response)


def poll(gateway: Gateway, path: str, ready, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        document = get(gateway, path).json()
        if ready(document) or time.monotonic() > deadline:
            return document
        time.sleep(0.2)


# ---- access


@pytest.mark.parametrize("path", READ_ENDPOINTS)
def test_admin_key_required(gateway: Gateway, path: str):
    assert get(gateway, path, headers={}).status_code == 401
    assert get(gateway, path, headers=CLIENT).status_code == 401
    assert get(gateway, path, headers={"x-api-key": CLIENT_KEY}).status_code == 401
    assert get(gateway, path, headers={"x-goog-api-key": ADMIN_KEY}).status_code == 200
    assert get(gateway, f"{path}?key={CLIENT_KEY}", headers={}).status_code == 401


def test_delete_needs_the_admin_key(gateway: Gateway):
    for headers in ({}, CLIENT):
        response = checked(
            httpx.delete(gateway.url + f"/api/upload-configs/delete/{CREDS}", headers=headers)
        )
        assert response.status_code == 401
    assert (gateway.config_dir / CREDS).exists()


# ---- providers


def test_providers_lists_pools_instances_and_config(gateway: Gateway, traffic: None):
    document = get(gateway, "/api/providers").json()
    pools = document["providers"]
    assert set(pools) >= {"alpha", "beta", "gcli", "echo"}
    alpha = pools["alpha"]
    assert alpha["type"] == "openai-custom"
    assert alpha["protocol"] == "openai-chat"
    assert alpha["models"] == ["gpt-a"]
    assert alpha["available"] is True
    one, two = alpha["instances"]
    assert one["id"] == "alpha-1" and one["configured"] is True and one["enabled"] is True
    assert one["api_key"] == "***"
    assert one["headers"] == {"X-Team": "blue", "X-Api-Key": "***"}
    assert one["unconfigured"] == []
    # the unconfigured one, and why
    assert two["configured"] is False
    assert two["missing_env"] == ["CONSOLE_UNSET_KEY"]
    assert two["unconfigured"] == ["environment variable CONSOLE_UNSET_KEY is not set"]
    assert two["base_url"] == "http://ops:***@127.0.0.1:9/v1"
    # an OAuth instance: its credentials file relative to the config dir, secret masked
    gcli = pools["gcli"]["instances"][0]
    assert gcli["configured"] is True
    assert gcli["options"]["credentials"] == CREDS
    assert gcli["options"]["client_secret"] == "***"
    assert gcli["options"]["client_id"] == "console-client.apps.googleusercontent.com"
    assert document["worker"] > 0


def test_providers_health_and_usage_today(gateway: Gateway, traffic: None):
    def used(document: dict[str, Any]) -> bool:
        usage = document["providers"]["alpha"]["usage_today"]
        return bool(usage) and usage["requests"] >= 2

    document = poll(gateway, "/api/providers", used)
    assert document["usage_available"] is True
    alpha = document["providers"]["alpha"]
    assert alpha["usage_today"]["requests"] == 2
    assert alpha["usage_today"]["output_tokens"] > 0
    one, two = alpha["instances"]
    assert one["usage_today"]["requests"] == 2
    assert one["usage_today"]["errors"] == {"4xx": 0, "5xx": 0, "cancelled": 0}
    assert two["usage_today"]["requests"] == 0
    assert one["healthy"] is True and one["successes"] >= 2
    # beta's only instance failed (connection refused): health and usage say so
    beta = poll(
        gateway,
        "/api/providers/beta",
        lambda d: (d["providers"]["beta"]["usage_today"] or {}).get("requests", 0) >= 1,
    )["providers"]["beta"]
    instance = beta["instances"][0]
    assert instance["consecutive_errors"] == 1
    assert instance["last_error"]["status"] in (502, 503, 504)
    assert beta["usage_today"]["requests"] == 1
    assert beta["usage_today"]["errors"]["5xx"] == 1


def test_provider_by_pool_or_type(gateway: Gateway):
    assert list(get(gateway, "/api/providers/alpha").json()["providers"]) == ["alpha"]
    assert list(get(gateway, "/api/providers/openai-custom").json()["providers"]) == [
        "alpha",
        "beta",
    ]
    assert list(get(gateway, "/api/providers/gemini-cli-oauth").json()["providers"]) == ["gcli"]
    missing = get(gateway, "/api/providers/nope")
    assert missing.status_code == 404
    assert "nope" in missing.json()["error"]["message"]


def test_provider_models(gateway: Gateway):
    models = get(gateway, "/api/provider-models").json()
    assert models["alpha"] == ["gpt-a"]
    assert models["beta"] == ["gpt-b"]
    # a pool listing no models advertises its adapter's default list
    assert "gemini-2.5-pro" in models["gcli"] and "gemini-2.5-flash" in models["gcli"]
    assert models["echo"] == []  # echo serves any model and lists none
    assert get(gateway, "/api/provider-models/beta").json() == {"beta": ["gpt-b"]}
    by_type = get(gateway, "/api/provider-models/openai-custom").json()
    assert by_type == {"alpha": ["gpt-a"], "beta": ["gpt-b"]}
    assert get(gateway, "/api/provider-models/nope").status_code == 404


def test_service_mode_standalone(gateway: Gateway):
    assert get(gateway, "/api/service-mode").json() == {"mode": "standalone", "workers": 1}


def test_service_mode_workers(fake: FakeUpstream, tmp_path: Path):
    """With ROUTER_WORKERS in the workers' environment (what `router serve` is to export)."""
    directory = make_config(tmp_path / "config", fake.url)
    env = {**ENV, "ROUTER_WORKERS": "2"}
    with Gateway(directory, env=env, workers=2) as gateway:
        assert get(gateway, "/api/service-mode").json() == {"mode": "workers", "workers": 2}


# ---- config files


def test_upload_configs_lists_yaml_and_credentials(gateway: Gateway):
    document = get(gateway, "/api/upload-configs").json()
    files = {f["path"]: f for f in document["files"]}
    assert set(files) == {"providers.yaml", "routes.yaml", "pipelines/team.yaml", CREDS}
    assert files["providers.yaml"]["kind"] == "yaml"
    creds = files[CREDS]
    assert creds["kind"] == "credentials"
    assert (creds["pool"], creds["instance"]) == ("gcli", "gcli-1")
    stat = (gateway.config_dir / CREDS).stat()
    assert creds["size"] == stat.st_size
    assert creds["mtime"] == pytest.approx(stat.st_mtime)
    # the symlink to a file outside the config dir is not listed


def test_view_yaml_masks_literal_secrets_only(gateway: Gateway):
    written = (gateway.config_dir / "providers.yaml").read_text()
    shown = get(gateway, "/api/upload-configs/view/providers.yaml").json()
    assert shown["path"] == "providers.yaml" and shown["kind"] == "yaml"
    content = shown["content"]
    assert content.startswith("# the console test's pools")  # as written, comments kept
    assert 'api_key: "***"   # a literal secret' in content
    assert "X-Api-Key: " + '"***"' in content
    assert 'client_secret: "***"' in content
    assert "api_key: ${CONSOLE_UNSET_KEY}" in content  # a reference is shown
    assert 'base_url: "http://ops:***@127.0.0.1:9/v1"' in content
    assert content.count("\n") == written.count("\n")
    pipeline = get(gateway, "/api/upload-configs/view/pipelines/team.yaml").json()["content"]
    assert 'value: "***"' in pipeline
    assert 'x-team: "${ROUTER_TEAM:-platform}"' in pipeline
    # names SECRET_NAME matches that hold no secret stay as written
    assert "rename: { max_tokens: max_completion_tokens }" in pipeline
    assert "first_token_timeout: 30s" in content
    routes = get(gateway, "/api/upload-configs/view/routes.yaml").json()["content"]
    assert routes == (gateway.config_dir / "routes.yaml").read_text()


def test_view_credentials_redacts_tokens_keeps_account(gateway: Gateway):
    shown = get(gateway, f"/api/upload-configs/view/{CREDS}").json()
    assert shown["kind"] == "credentials"
    assert shown["content"] == {
        "access_token": "***",
        "refresh_token": "***",
        "id_token": "***",
        "token_type": "Bearer",
        "scope": "https://www.googleapis.com/auth/cloud-platform openid",
        "expiry_date": EXPIRY_MS,
        "email": "operator@example.com",
        "project_id": "console-project-123",
    }
    assert shown["expiry"] == "2030-01-01T00:00:00Z"


def test_download_all_is_a_zip_of_the_yaml(gateway: Gateway):
    response = get(gateway, "/api/upload-configs/download-all")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/zip")
    assert "attachment" in response.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        names = sorted(archive.namelist())
        assert names == ["pipelines/team.yaml", "providers.yaml", "routes.yaml"]
        shown = get(gateway, "/api/upload-configs/view/providers.yaml").json()["content"]
        assert archive.read("providers.yaml").decode() == shown


def test_config_rows_show_the_files_as_the_view_does(gateway: Gateway):
    """One masking: GET /api/config, the view and the zip show a YAML file alike."""
    files = get(gateway, "/api/config").json()["files"]
    assert set(files) == {"providers.yaml", "routes.yaml", "pipelines/team.yaml"}
    zipped = get(gateway, "/api/upload-configs/download-all").content
    with zipfile.ZipFile(io.BytesIO(zipped)) as archive:
        for path, text in files.items():
            view = get(gateway, f"/api/upload-configs/view/{path}").json()["content"]
            assert text == view == archive.read(path).decode(), path


TRAVERSALS = (
    "../outside.json",
    "configs/../../outside.json",
    "%2e%2e/outside.json",
    "%2E%2E%2Foutside.json",
    "..%2foutside.json",
    "configs%2f..%2f..%2foutside.json",
    "/etc/passwd",
    "%2fetc%2fpasswd",
    "configs/outside.json",  # a symlink leading outside
    "configs/gemini/../../../{name}-outside.json",
    "configs/gemini/..%2f..%2f..%2f{name}-outside.json",
    "providers.yaml%00.json",
    "routes.test.yaml",  # not there: nothing else is served
    "configs/",
)


@pytest.mark.parametrize("target", TRAVERSALS)
def test_paths_outside_the_config_dir_are_refused(gateway: Gateway, target: str):
    target = target.format(name=gateway.config_dir.name)
    for method, prefix in (("GET", "view"), ("DELETE", "delete")):
        status, body = raw_request(gateway, method, f"/api/upload-configs/{prefix}/{target}")
        assert status in (400, 404), (method, target, status, body)
        # refused by the handler (not an unrouted path): the path is not one it lists
        message = json.loads(body)["error"]["message"]
        assert "relative to the config dir" in message or "no config or credentials" in message
        assert b"root:" not in body and OUTSIDE_TOKEN.encode() not in body
    outside = gateway.config_dir.parent / f"{gateway.config_dir.name}-outside.json"
    assert outside.exists() and (gateway.config_dir / "configs/outside.json").is_symlink()


def test_yaml_files_cannot_be_deleted(gateway: Gateway):
    for path in ("providers.yaml", "pipelines/team.yaml"):
        response = checked(
            httpx.delete(gateway.url + f"/api/upload-configs/delete/{path}", headers=ADMIN)
        )
        assert response.status_code == 400
        assert (gateway.config_dir / path).exists()


def test_delete_credentials_unconfigures_the_instance(fake: FakeUpstream, tmp_path: Path):
    directory = make_config(tmp_path / "config", fake.url)
    with Gateway(directory, env=ENV) as gateway:

        def gcli(document: dict[str, Any]) -> dict[str, Any]:
            return document["providers"]["gcli"]["instances"][0]

        health = checked(httpx.get(gateway.url + "/provider_health", headers=CLIENT)).json()
        assert gcli(health)["configured"] is True
        response = checked(
            httpx.delete(gateway.url + f"/api/upload-configs/delete/{CREDS}", headers=ADMIN)
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"deleted": CREDS, "pool": "gcli", "instance": "gcli-1"}
        assert not (directory / CREDS).exists()
        deadline = time.monotonic() + 5
        while gcli(health)["configured"] and time.monotonic() < deadline:
            time.sleep(0.1)
            health = checked(httpx.get(gateway.url + "/provider_health", headers=CLIENT)).json()
        assert gcli(health)["configured"] is False
        assert gcli(health)["missing_env"] == [f"file:{CREDS}"]
        why = gcli(get(gateway, "/api/providers/gcli").json())["unconfigured"]
        assert why == [f"credentials file {CREDS} does not exist"]
        listed = [f["path"] for f in get(gateway, "/api/upload-configs").json()["files"]]
        assert CREDS not in listed
        again = get(gateway, f"/api/upload-configs/view/{CREDS}")
        assert again.status_code == 404

        # a providers.yaml broken mid-edit (the last good config keeps serving) is still
        # shown with its literal secrets masked
        written = (directory / "providers.yaml").read_text()
        (directory / "providers.yaml").write_text(written + "  broken: [\n")
        shown = get(gateway, "/api/upload-configs/view/providers.yaml").json()["content"]
        assert shown.endswith("  broken: [\n")
        assert 'api_key: "***"   # a literal secret' in shown
        assert "X-Api-Key: " + '"***"' in shown
        assert "api_key: ${CONSOLE_UNSET_KEY}" in shown
        assert "first_token_timeout: 30s" in shown


def test_unknown_file_is_404_and_no_store_means_null_usage(fake: FakeUpstream, tmp_path: Path):
    """With the state store off (ROUTER_RECORDS=0) usage is null, the rest still answers."""
    directory = make_config(tmp_path / "config", fake.url)
    with Gateway(directory, env={**ENV, "ROUTER_RECORDS": "0"}) as gateway:
        document = get(gateway, "/api/providers").json()
        assert document["usage_available"] is False
        assert document["providers"]["alpha"]["usage_today"] is None
        assert document["providers"]["alpha"]["instances"][0]["usage_today"] is None
        assert get(gateway, "/api/upload-configs/view/nope.yaml").status_code == 404
