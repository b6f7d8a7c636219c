"""The web console (issue 16) in a real browser: Debian's Chromium driven by Playwright
against a real `router serve` with a fake OpenAI upstream.

Signing in goes through the login form (POST /api/login, the session cookie); then each
page is checked for what it must show, its answers for the security headers, and the
browser for console errors and Content-Security-Policy violations (none allowed: the
pages carry no inline script or style). No page may show a configured secret."""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import write_config
from tests.fakes import FakeUpstream
from tests.fakes.google import FakeGoogleProcess
from tests.gateway import Gateway
from tests.test_gemini_oauth import write_config as write_oauth_config

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        "the console UI tests drive Debian's Chromium at /usr/bin/chromium (apt-get install "
        "chromium; .ci/run does): it is not installed here",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

UPSTREAM_KEY = "sk-ui-upstream-6f0d2c9b81a4"
ADMIN_KEY = "rk-ui-admin-93e1a7c45b02"
CLIENT_KEY = "rk-ui-client-1c8d5e2f7a60"
ADMIN_PASSWORD = "ui-password-4b7e9d21c3f8"
SECRETS = (UPSTREAM_KEY, ADMIN_KEY, CLIENT_KEY, ADMIN_PASSWORD)
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
PAGES = (
    "/ui/",
    "/ui/providers",
    "/ui/routes",
    "/ui/keys",
    "/ui/config",
    "/ui/usage",
    "/ui/logs",
    "/ui/system",
)
CHAT = "/v1/chat/completions"
# collects what the page's CSP refused (an init script is not subject to the page's CSP)
WATCH_CSP = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(e.violatedDirective + " " + e.blockedURI);
});
"""


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream.start(api_key=UPSTREAM_KEY) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def gateway(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    directory = write_config(
        tmp_path_factory.mktemp("console-ui") / "config",
        {
            "providers.yaml": f"""
                providers:
                  alpha:
                    type: openai-custom
                    models: [gpt-a]
                    instances:
                      - id: alpha-1
                        base_url: {fake.url}/v1
                        api_key: {UPSTREAM_KEY}
                        proxy: false
                  echo:
                    type: echo
                """,
            "routes.yaml": """
                default: alpha
                routes:
                  - name: echo
                    match: { model: echo-* }
                    to: [echo]
                """,
        },
    )
    env = {"ADMIN_API_KEY": ADMIN_KEY, "REQUIRED_API_KEY": CLIENT_KEY, "ROUTER_WATCH": "0"}
    with Gateway(directory, env=env) as gateway:
        for model in ("gpt-a", "gpt-a", "gpt-a", "echo-1"):
            response = httpx.post(
                gateway.url + CHAT,
                headers={"authorization": f"Bearer {CLIENT_KEY}"},
                json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
                timeout=20,
            )
            assert response.status_code == 200, response.text
        wait_for_records(gateway, 4)
        yield gateway


def wait_for_records(gateway: Gateway, count: int, timeout: float = 10.0) -> None:
    """Until the state store holds `count` request rows (they land within a second)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = httpx.get(
            gateway.url + "/api/requests",
            headers={"authorization": f"Bearer {ADMIN_KEY}"},
            timeout=5,
        )
        if answer.status_code == 200 and len(answer.json()["requests"]) >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"fewer than {count} request records after {timeout}s")


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            yield browser
        finally:
            browser.close()


class Watched:
    """A page whose console errors, uncaught exceptions and CSP violations are kept;
    `expect` names errors a test provokes on purpose (an HTTP 400 it asks for)."""

    def __init__(self, page: sync_api.Page) -> None:
        self.page = page
        self.errors: list[str] = []
        self.expected: list[re.Pattern[str]] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))

    def _console(self, message: sync_api.ConsoleMessage) -> None:
        if message.type == "error":
            where = message.location.get("url", "") if message.location else ""
            self.errors.append(f"{message.text} ({where})")

    def expect(self, pattern: str) -> None:
        self.expected.append(re.compile(pattern))

    def problems(self) -> list[str]:
        found = [e for e in self.errors if not any(p.search(e) for p in self.expected)]
        violations = self.page.evaluate("window.__cspViolations || []")
        return found + [f"CSP: {v}" for v in violations]


@pytest.fixture
def watched(browser: sync_api.Browser, gateway: Gateway) -> Iterator[Watched]:
    context = browser.new_context(base_url=gateway.url)
    context.set_default_timeout(15_000)
    context.add_init_script(WATCH_CSP)
    page = context.new_page()
    watch = Watched(page)
    try:
        yield watch
        assert watch.problems() == [], "errors in the browser"
    finally:
        context.close()


def sign_in(watch: Watched, key: str = ADMIN_KEY) -> sync_api.Page:
    page = watch.page
    page.goto("/ui/login")
    page.fill("#secret", key)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(re.compile(r"/ui/$"))
    return page


def no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} in a page"


# ---- signing in


def test_root_redirects_to_the_console_then_to_login(gateway: Gateway, watched: Watched):
    first = httpx.get(gateway.url + "/")
    assert first.status_code in (301, 302, 303, 307, 308)
    assert first.headers["location"] == "/ui/"
    second = httpx.get(gateway.url + "/ui/")
    assert second.status_code in (302, 303)
    assert second.headers["location"].startswith("/ui/login")
    for answer in (first, second):
        assert answer.headers["content-security-policy"] == CSP
        assert answer.headers["x-content-type-options"] == "nosniff"
    # an unknown path under /ui/ is the gateway's JSON 404: `/ui/v1/...` may be a model
    # call under a provider prefix, answered in its client's protocol
    assert httpx.get(gateway.url + "/ui/no-such-page").status_code == 404
    page = watched.page
    response = page.goto("/")
    assert response is not None and response.ok
    assert re.search(r"/ui/login\?next=", page.url), page.url
    assert page.locator("#login-form").is_visible()
    assert response.headers["content-security-policy"] == CSP


def test_wrong_key_is_refused(watched: Watched):
    watched.expect(r"status of 401")  # the browser logs the refused login's answer
    page = watched.page
    page.goto("/ui/login")
    page.fill("#secret", CLIENT_KEY)  # a client key never opens the console
    page.click("#login-form button[type=submit]")
    sync_api.expect(page.locator("#login-result")).to_contain_text("Wrong admin key")
    assert "/ui/login" in page.url


def test_login_lands_on_the_dashboard_with_charts_and_pool_tiles(watched: Watched):
    page = sign_in(watched)
    assert page.locator("h1").inner_text() == "Dashboard"
    charts = page.locator("svg.chart")
    assert charts.count() >= 4
    # requests were made: the requests-per-second chart has a line or a dot
    assert page.locator("svg.chart polyline, svg.chart circle").count() >= 1
    assert page.locator("svg.chart rect.chart-bar").count() >= 1
    tiles = page.locator(".tile")
    assert sorted(tiles.evaluate_all("ts => ts.map(t => t.dataset.pool)")) == ["alpha", "echo"]
    sync_api.expect(page.locator('.tile[data-pool="alpha"] .chip')).to_have_text("alpha-1")


# ---- pages


def test_providers_page_and_health_check(watched: Watched):
    page = sign_in(watched)
    page.goto("/ui/providers")
    sync_api.expect(page.locator('#pool-alpha tr[data-instance="alpha-1"]')).to_be_visible()
    sync_api.expect(page.locator("#pool-echo")).to_contain_text("Built in")
    page.locator("#pool-alpha").get_by_role("button", name="Health check").click()
    result = page.locator("#action-result")
    sync_api.expect(result).to_contain_text("alpha/alpha-1: ok")
    sync_api.expect(result).to_have_class(re.compile(r"\bok\b"))


def test_providers_override_buttons(watched: Watched, gateway: Gateway):
    page = sign_in(watched)
    page.goto("/ui/providers")
    row = page.locator('#pool-alpha tr[data-instance="alpha-1"]')
    row.get_by_role("button", name="Disable").click()
    sync_api.expect(page.locator("#action-result")).to_contain_text("disable alpha/alpha-1: ok")
    sync_api.expect(row.locator(".badge")).to_have_text("disabled")
    row = page.locator('#pool-alpha tr[data-instance="alpha-1"]')
    row.get_by_role("button", name="Clear override").click()
    sync_api.expect(page.locator("#action-result")).to_contain_text("clear the override")
    sync_api.expect(row.locator(".badge")).to_have_text("healthy")


def test_routes_page_explains(watched: Watched):
    page = sign_in(watched)
    page.goto("/ui/routes")
    sync_api.expect(page.locator("table.routes")).to_contain_text("echo-*")
    page.fill('input[name="model"]', "echo-7")
    page.select_option('select[name="protocol"]', "anthropic")
    page.get_by_role("button", name="Explain").click()
    sync_api.expect(page.locator("#explained pre")).to_contain_text("=> route 'echo'")
    # headers, one a line, as `router explain --header`: the override header picks the pool
    page.fill('textarea[name="headers"]', "Model-Provider: alpha")
    page.get_by_role("button", name="Explain").click()
    sync_api.expect(page.locator("#explained pre")).to_contain_text(
        "header model-provider: 'alpha': selects it"
    )
    page.fill('textarea[name="headers"]', "no colon here")
    page.get_by_role("button", name="Explain").click()
    sync_api.expect(page.locator("#explained")).to_contain_text("expected 'Name: value'")


def test_config_page_checks_then_saves(watched: Watched, gateway: Gateway):
    watched.expect(r"status of 400.*/api/config")  # the refused edit's answer
    routes = gateway.config_dir / "routes.yaml"
    before = routes.read_text()
    page = sign_in(watched)
    page.goto("/ui/config")
    section = page.locator('section[data-file="routes.yaml"]')
    editor = section.locator("textarea")
    assert editor.input_value() == before
    # the file highlighted: its text exactly, keys marked
    view = section.locator("pre.yaml")
    assert view.inner_text() == before.rstrip("\n") or view.inner_text() == before
    sync_api.expect(view.locator("span.yaml-key").first).to_be_visible()
    assert "routes" in view.locator("span.yaml-key").all_inner_texts()
    broken = before + "  - name: broken\n    match: { model: nope }\n    to: [nowhere]\n"
    editor.fill(broken)
    section.get_by_role("button", name="Save routes.yaml").click()
    result = section.locator(".result")
    sync_api.expect(result).to_contain_text(re.compile(r"routes\.yaml:\d+:\d+"))
    sync_api.expect(result).to_have_class(re.compile(r"\bbad\b"))
    assert routes.read_text() == before, "a refused edit changed the file"

    fixed = before + "  - name: added\n    match: { model: added-* }\n    to: [echo]\n"
    editor.fill(fixed)
    section.get_by_role("button", name="Save routes.yaml").click()
    sync_api.expect(result).to_contain_text("saved routes.yaml")
    assert routes.read_text() == fixed
    page.goto("/ui/routes")
    sync_api.expect(page.locator("table.routes")).to_contain_text("added-*")


def sync_gateway_url(page: sync_api.Page) -> str:
    return re.match(r"https?://[^/]+", page.url).group(0)  # type: ignore[union-attr]


def test_usage_page(watched: Watched):
    page = sign_in(watched)
    page.goto("/ui/usage")
    table = page.locator("table.usage")
    sync_api.expect(table).to_contain_text("alpha")
    sync_api.expect(table).to_contain_text("gpt-a")
    # charts per day: requests, tokens and cost, each an SVG with today's point
    charts = page.locator(".charts svg")
    sync_api.expect(charts).to_have_count(3)
    sync_api.expect(page.locator(".charts")).to_contain_text("Requests per day")
    assert page.locator(".charts svg").first.locator("circle, polyline, path").count() > 0
    # the CSV download: the table's rows, for the same range and grouping
    link = page.locator("#usage-csv")
    href = link.get_attribute("href")
    assert href is not None and href.startswith("/ui/usage.csv?")
    assert "group_by=day%2Cpool%2Cmodel" in href, href
    answer = page.request.get(href)
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/csv")
    assert answer.headers["content-disposition"].startswith("attachment;")
    rows = list(csv.reader(io.StringIO(answer.text())))
    assert rows[0][:4] == ["day", "pool", "model", "requests"]
    body = rows[1:]
    assert len(body) == table.locator("tbody tr").count()
    by_model = {(row[1], row[2]): int(row[3]) for row in body}
    assert by_model[("alpha", "gpt-a")] >= 3 and by_model[("echo", "echo-1")] >= 1
    with page.expect_download() as download:
        link.click()
    assert download.value.suggested_filename.endswith(".csv")
    # the same admin check as the pages: no session, no CSV
    refused = httpx.get(sync_gateway_url(page) + href)
    assert refused.status_code in (302, 303) and "/ui/login" in refused.headers["location"]
    page.locator('input[name="group_by"][value="model"]').uncheck()
    page.get_by_role("button", name="Show").click()
    sync_api.expect(page.locator("table.usage thead")).not_to_contain_text("model")


def test_logs_page_lists_requests_and_follows_live_events(watched: Watched, gateway: Gateway):
    page = sign_in(watched)
    page.goto("/ui/logs")
    rows = page.locator("table.requests tr.request")
    assert rows.count() >= 4
    sync_api.expect(page.locator("table.requests")).to_contain_text("gpt-a")
    sync_api.expect(page.locator("#live-status")).to_have_text("live")
    response = httpx.post(
        gateway.url + CHAT,
        headers={"authorization": f"Bearer {CLIENT_KEY}"},
        json={"model": "echo-live", "messages": [{"role": "user", "content": "hi"}]},
        timeout=20,
    )
    assert response.status_code == 200
    sync_api.expect(page.locator("#live-list .event-request")).to_contain_text("echo-live")
    page.select_option('select[name="pool"]', "echo")  # the filter form refreshes the table
    sync_api.expect(page.locator("table.requests")).not_to_contain_text("gpt-a")
    sync_api.expect(page.locator("table.requests")).to_contain_text("echo")


def test_every_page_has_the_security_headers_and_no_secret(
    watched: Watched, gateway: Gateway, tmp_path: Path
):
    page = sign_in(watched)
    for path in (*PAGES, "/ui/routes/explain?model=gpt-a", "/ui/login"):
        response = page.goto(path)
        assert response is not None and response.status == 200, path
        headers = response.headers
        assert headers["content-security-policy"] == CSP, path
        assert headers["x-content-type-options"] == "nosniff", path
        assert headers["referrer-policy"] == "no-referrer", path
        no_secret(response.text())
        no_secret(page.content())
        name = path.removeprefix("/ui/").split("?")[0].replace("/", "-") or "dashboard"
        shot = tmp_path / f"{name}.png"
        page.screenshot(path=shot, full_page=True)
        assert shot.stat().st_size > 0, shot
    for name in ("console.js", "console.css", "htmx.min.js", "htmx.LICENSE"):
        response = httpx.get(f"{gateway.url}/ui/static/{name}")  # open: no session needed
        assert response.status_code == 200, name
        assert response.headers["x-content-type-options"] == "nosniff", name
        assert response.headers["content-security-policy"] == CSP, name


def test_keys_page_makes_changes_and_revokes_a_key(watched: Watched, gateway: Gateway):
    page = sign_in(watched)
    page.goto("/ui/keys")
    config_row = page.locator('table.keys tr[data-key="REQUIRED_API_KEY"]')
    sync_api.expect(config_row).to_contain_text("config")
    form = page.locator("#key-create")
    form.locator('input[name="name"]').fill("ui-team")
    form.locator('input[name="models"]').fill("echo-*, gpt-a")
    form.locator('input[name="providers"][value="echo"]').check()
    form.locator('input[data-limit="rpm"]').fill("50")
    form.locator('input[name="expires"]').fill("2099-01-01T00:00")
    form.get_by_role("button", name="Create key").click()
    shown = page.locator("#new-key code.new-key")
    sync_api.expect(shown).to_have_text(re.compile(r"^sk-router-[A-Za-z0-9_-]{40}$"))
    sync_api.expect(page.locator("#new-key")).to_contain_text("cannot be shown again")
    key = shown.inner_text()
    row = page.locator('table.keys tr[data-key="ui-team"]')
    sync_api.expect(row).to_contain_text("echo-*, gpt-a")
    sync_api.expect(row).to_contain_text("rpm 50")
    sync_api.expect(row).to_contain_text("2099-01-01")
    sync_api.expect(row.locator(".badge")).to_have_text("active")
    sync_api.expect(row.locator("code")).to_have_text(key[:14] + "…")
    assert form.locator('input[name="name"]').input_value() == ""  # the form was reset

    def ask(model: str) -> httpx.Response:
        return httpx.post(
            gateway.url + CHAT,
            headers={"authorization": f"Bearer {key}"},
            json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
            timeout=20,
        )

    assert ask("echo-keys").status_code == 200
    assert ask("gpt-a").status_code == 403  # in its models, not in its providers

    # change its limits and scopes: only what was changed is sent
    row.locator("summary").click()
    editor = row.locator("form.key-form")
    editor.locator('input[data-limit="rpm"]').fill("70")
    editor.locator('input[data-limit="tpm"]').fill("9000")
    editor.locator('input[name="providers"][value="alpha"]').check()
    editor.get_by_role("button", name="Save ui-team").click()
    sync_api.expect(page.locator("#key-result")).to_contain_text("change ui-team: ok")
    row = page.locator('table.keys tr[data-key="ui-team"]')
    sync_api.expect(row).to_contain_text("rpm 70")
    sync_api.expect(row).to_contain_text("tpm 9,000")
    sync_api.expect(row).to_contain_text("alpha, echo")
    assert ask("gpt-a").status_code == 200

    # revoke: asked first; no, then yes
    page.once("dialog", lambda dialog: dialog.dismiss())
    row.get_by_role("button", name="Revoke").click()
    time.sleep(0.3)
    sync_api.expect(row.locator(".badge")).to_have_text("active")
    assert ask("echo-keys").status_code == 200
    questions: list[str] = []

    def accept(dialog: sync_api.Dialog) -> None:
        questions.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    row.get_by_role("button", name="Revoke").click()
    sync_api.expect(page.locator("#key-result")).to_contain_text("revoke ui-team: ok")
    sync_api.expect(page.locator('table.keys tr[data-key="ui-team"] .badge')).to_have_text(
        "revoked"
    )
    assert questions and "ui-team" in questions[0]
    refused = ask("echo-keys")
    assert refused.status_code == 401 and "revoked" in refused.text

    # shown once: no page, no admin answer has it afterwards
    for path in (*PAGES, "/ui/keys"):
        response = page.goto(path)
        assert response is not None and response.status == 200, path
        assert key not in response.text() and key not in page.content(), path
    for path in ("/api/keys", "/api/keys/ui-team", "/api/requests", "/api/usage?group_by=key"):
        answer = page.request.get(path)
        assert answer.status == 200, path
        assert key not in answer.text(), path


def test_system_page(watched: Watched):
    page = sign_in(watched)
    page.goto("/ui/system")
    sync_api.expect(page.locator("table.facts-table")).to_contain_text("worker pid")


def test_sign_out(watched: Watched):
    page = sign_in(watched)
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/ui/login"))
    page.goto("/ui/providers")  # the session is gone
    assert re.search(r"/ui/login\?next=/ui/providers", page.url), page.url


def openai_client(gateway: Gateway):
    openai = pytest.importorskip("openai")
    http = httpx.Client(trust_env=False, timeout=20)
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=CLIENT_KEY, http_client=http)


def test_a_request_shows_in_the_live_logs_within_two_seconds(watched: Watched, gateway: Gateway):
    page = sign_in(watched)
    page.goto("/ui/logs")
    sync_api.expect(page.locator("#live-status")).to_have_text("live")
    client = openai_client(gateway)
    answer = client.chat.completions.create(
        model="echo-sdk-live", messages=[{"role": "user", "content": "hello"}]
    )
    assert answer.choices[0].message.content
    live = page.locator("#live-list .event-request").filter(has_text="echo-sdk-live")
    sync_api.expect(live).to_have_count(1, timeout=2_000)


def test_no_page_or_admin_answer_shows_a_secret(watched: Watched, gateway: Gateway):
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    changed = httpx.post(
        gateway.url + "/api/admin-password", json={"password": ADMIN_PASSWORD}, headers=admin
    )
    assert changed.status_code == 200, changed.text
    assert ADMIN_PASSWORD not in changed.text
    # the password opens the console (so it is the one configured), then every page
    page = watched.page
    page.goto("/ui/login")
    page.check('input[name="kind"][value="password"]')
    page.fill("#secret", ADMIN_PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(re.compile(r"/ui/$"))
    for path in (*PAGES, "/ui/routes/explain?model=gpt-a", "/ui/usage.csv", "/ui/login"):
        response = page.goto(path) if not path.endswith(".csv") else None
        if response is not None:
            assert response.status == 200, path
            no_secret(response.text())
            no_secret(page.content())
        answer = httpx.get(gateway.url + path, headers=admin, timeout=10)
        assert answer.status_code == 200, path
        no_secret(answer.text)
    apis = (
        "/api/providers",
        "/api/keys",
        "/api/config",
        "/api/upload-configs",
        "/api/system",
        "/api/usage",
        "/api/requests",
        "/provider_health",
        "/metrics",
        "/api/session",
    )
    for path in apis:
        answer = httpx.get(gateway.url + path, headers=admin, timeout=10)
        assert answer.status_code == 200, (path, answer.status_code)
        no_secret(answer.text)
        # and as the browser's session sees it
        seen = page.request.get(path)
        assert seen.status == 200, (path, seen.status)
        no_secret(seen.text())


def test_disabling_an_instance_steers_the_next_requests(browser: sync_api.Browser, tmp_path: Path):
    with (
        FakeUpstream.start(api_key=UPSTREAM_KEY) as first,
        FakeUpstream.start(api_key=UPSTREAM_KEY) as second,
    ):
        directory = write_config(
            tmp_path / "config",
            {
                "providers.yaml": f"""
                    providers:
                      duo:
                        type: openai-custom
                        models: [gpt-d]
                        instances:
                          - id: duo-1
                            base_url: {first.url}/v1
                            api_key: {UPSTREAM_KEY}
                            proxy: false
                          - id: duo-2
                            base_url: {second.url}/v1
                            api_key: {UPSTREAM_KEY}
                            proxy: false
                    """,
                "routes.yaml": "default: duo\n",
            },
        )
        env = {"ADMIN_API_KEY": ADMIN_KEY, "REQUIRED_API_KEY": CLIENT_KEY, "ROUTER_WATCH": "0"}
        with Gateway(directory, env=env) as gateway, watching(browser, gateway) as watch:
            page = sign_in(watch)
            page.goto("/ui/providers")
            row = page.locator('#pool-duo tr[data-instance="duo-1"]')
            row.get_by_role("button", name="Disable").click()
            sync_api.expect(page.locator("#action-result")).to_contain_text("disable duo/duo-1: ok")
            sync_api.expect(row.locator(".badge")).to_have_text("disabled")
            before = len(first.requests()), len(second.requests())
            client = openai_client(gateway)
            for turn in range(4):
                answer = client.chat.completions.create(
                    model="gpt-d", messages=[{"role": "user", "content": f"turn {turn}"}]
                )
                assert answer.choices[0].message.content
            after = len(first.requests()), len(second.requests())
            assert after[0] == before[0], "the disabled instance got a request"
            assert after[1] == before[1] + 4
            # enabled again, it is used again (so the instances were both usable)
            row.get_by_role("button", name="Clear override").click()
            sync_api.expect(row.locator(".badge")).to_have_text("healthy")


@contextmanager
def watching(browser: sync_api.Browser, gateway: Gateway) -> Iterator[Watched]:
    """A fresh browser context on `gateway`, checked for errors as `watched` is."""
    context = browser.new_context(base_url=gateway.url)
    context.set_default_timeout(15_000)
    context.add_init_script(WATCH_CSP)
    watch = Watched(context.new_page())
    try:
        yield watch
        assert watch.problems() == [], "errors in the browser"
    finally:
        context.close()


def test_login_lockout_in_the_browser(browser: sync_api.Browser, tmp_path: Path):
    directory = write_config(
        tmp_path / "config",
        {
            "providers.yaml": "providers:\n  echo:\n    type: echo\n",
            "routes.yaml": "default: echo\n",
        },
    )
    env = {"ADMIN_API_KEY": ADMIN_KEY, "ROUTER_WATCH": "0"}
    with Gateway(directory, env=env) as gateway, watching(browser, gateway) as watch:
        watch.expect(r"status of 401")
        watch.expect(r"status of 429")
        page = watch.page
        page.goto("/ui/login")
        result = page.locator("#login-result")
        for attempt in range(5):
            page.fill("#secret", f"wrong-key-{attempt}")
            with page.expect_response("**/api/login") as answer:
                page.click("#login-form button[type=submit]")
            assert answer.value.status == 401, attempt
            sync_api.expect(result).to_have_text("Wrong admin key or password.")
        page.fill("#secret", ADMIN_KEY)  # even the right key, now
        with page.expect_response("**/api/login") as answer:
            page.click("#login-form button[type=submit]")
        assert answer.value.status == 429
        sync_api.expect(result).to_contain_text("Too many failed attempts")
        assert "/ui/login" in page.url


@pytest.fixture(scope="module")
def google() -> Iterator[FakeGoogleProcess]:
    process = FakeGoogleProcess.start()
    yield process
    process.stop()


def test_google_sign_in_from_the_providers_page(
    browser: sync_api.Browser, google: FakeGoogleProcess, tmp_path: Path
):
    directory = tmp_path / "config"
    directory.mkdir()
    write_oauth_config(directory, google, "gem-1")
    env = {"ADMIN_API_KEY": ADMIN_KEY, "ROUTER_WATCH": "0"}
    with Gateway(directory, env=env) as gateway, watching(browser, gateway) as watch:
        page = sign_in(watch)
        page.goto("/ui/providers")
        pool = page.locator("#pool-gemini-cli-oauth")
        row = pool.locator('tr[data-instance="gem-1"]')
        sync_api.expect(row.locator(".badge")).to_have_text("unconfigured")
        credentials = pool.locator('.oauth-files li[data-instance="gem-1"]')
        sync_api.expect(credentials).to_contain_text("configs/gemini/oauth_creds.json")
        sync_api.expect(credentials).to_contain_text("missing")
        with page.context.expect_page() as opened:
            row.get_by_role("button", name="Sign in with Google").click()
        popup = opened.value
        # the fake consents at once and redirects to the loopback callback
        popup.wait_for_url(re.compile(r"/oauth2callback\?"))
        status = page.locator("#oauth-status .oauth-state")
        sync_api.expect(status).to_have_text("done")
        sync_api.expect(row.locator(".badge")).to_have_text("healthy")
        sync_api.expect(credentials).to_contain_text("access token expires")
        written = json.loads((directory / "configs/gemini/oauth_creds.json").read_text())
        shown = page.content()
        for key in ("access_token", "refresh_token"):
            assert written[key] and written[key] not in shown, key
        answer = httpx.post(
            gateway.url + CHAT,
            json={"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]},
            timeout=20,
        )
        assert answer.status_code == 200, answer.text


# ---- without a browser


def test_read_only_config_page_disables_the_editors(tmp_path: Path):
    directory = write_config(
        tmp_path / "config",
        {
            "providers.yaml": "providers:\n  echo:\n    type: echo\n",
            "routes.yaml": "default: echo\n",
        },
    )
    env = {"ADMIN_API_KEY": ADMIN_KEY, "ROUTER_ADMIN_READ_ONLY": "1", "ROUTER_WATCH": "0"}
    with Gateway(directory, env=env) as gateway:
        page = httpx.get(
            gateway.url + "/ui/config", headers={"authorization": f"Bearer {ADMIN_KEY}"}
        )
    assert page.status_code == 200
    assert "config is managed in git" in page.text
    editors = re.findall(r"<textarea[^>]*>", page.text)
    assert len(editors) == 2 and all(" disabled" in e for e in editors), editors
    assert page.headers["content-security-policy"] == CSP


def test_charts_escape_labels_and_draw_points():
    from router.console.ui import charts

    empty = charts.line_chart([], title="<b>empty</b>")
    assert "<b>" not in empty and "&lt;b&gt;empty&lt;/b&gt;" in empty and "no data" in empty
    line = charts.line_chart(
        [(0.0, 1.0), (60.0, 3.0), (120.0, 2.0)],
        title='rps "quoted" & <x>',
        more=[("p95 <y>", [(0.0, 5.0)])],
    )
    assert "<x>" not in line and "&lt;x&gt;" in line and "&lt;y&gt;" in line
    assert "&#34;quoted&#34;" in line or "&quot;quoted&quot;" in line
    assert line.count("<polyline") == 1 and line.count("<circle") == 1
    assert "style=" not in line  # the console's CSP refuses style attributes
    bars = charts.bar_chart([(0.0, 10.0), (60.0, 0.0)], title="tokens", span=(0.0, 120.0))
    assert bars.count('class="chart-bar"') == 2 and "style=" not in bars
    assert charts.scale(7) == (8, 2) and charts.scale(0) == (1.0, 0.25)


def test_dashboard_series_from_the_requests_table():
    import sqlite3

    from router.console.ui import series
    from router.records.store import MIGRATIONS

    connection = sqlite3.connect(":memory:")
    connection.executescript(MIGRATIONS[0])
    now = 1_800_000_000.0  # a minute boundary + 30 s below
    rows = [  # (seconds ago, status, duration, input, output)
        (30.0, 200, 0.010, 10, 5),
        (20.0, 200, 0.020, 10, 5),
        (10.0, 502, 0.300, 0, 0),
        (90.0, 200, 0.040, 1, 1),
        (7200.0, 200, 9.0, 100, 100),  # older than the hour: left out
    ]
    for ago, status, duration, tokens_in, tokens_out in rows:
        connection.execute(
            "INSERT INTO requests (request_id, time, day, protocol, endpoint, path, status, "
            "stream, duration, overhead, input_tokens, output_tokens, cached_tokens, "
            "reasoning_tokens, estimated, dropped, attempts) "
            "VALUES ('r', ?, 'd', 'openai-chat', 'chat', '/', ?, 0, ?, 0, ?, ?, 0, 0, 0, '', '[]')",
            (now + 30 - ago, status, duration, tokens_in, tokens_out),
        )
    figures = series.last_hour(connection, now=now + 30)
    totals = figures["totals"]
    assert totals["requests"] == 4 and totals["errors"] == 1
    assert totals["error_rate"] == 25.0
    assert (totals["input_tokens"], totals["output_tokens"]) == (21, 11)
    assert len(figures["rps"]) == 60  # one point a minute, empty minutes as 0
    last_minute = figures["rps"][-1]
    assert last_minute == (now, 3 / 30)  # 3 requests in the 30 s of the minute under way
    assert figures["error_rate"][-1] == (now, 100 / 3)
    assert figures["p50"][-1] == (now, 20.0) and figures["p95"][-1] == (now, 300.0)
    assert figures["p50"][-2] == (now - 60, 40.0)
