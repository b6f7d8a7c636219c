"""`pricing:` of a pool: validated (a bad glob names its line and column), shown by
`router compile`, and turned into the cost of each request in /api/usage."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.conftest import write_config
from tests.gateway import Gateway
from tests.routercli import router

ADMIN = "pricing-admin-key"
PROVIDERS = """
providers:
  echo:
    type: echo
    pricing:
      "echo-*": { input: 3.0, output: 15.0, cached_input: 0.3 }
      "*": { input: 1, output: 2 }
"""


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return write_config(
        tmp_path_factory.mktemp("pricing"),
        {"providers.yaml": PROVIDERS, "routes.yaml": "default: echo\n"},
    )


def test_compile_shows_the_prices_in_written_order(config) -> None:
    run = router("compile", "--config-dir", str(config))
    assert run.code == 0, run.stderr
    text = run.stdout
    assert text.index("echo-*:") < text.index("'*':")
    assert "cached_input: 0.3" in text and "output: 15.0" in text


def test_a_bad_glob_is_an_error_at_its_key(tmp_path) -> None:
    bad = PROVIDERS + '      "gpt-[": { input: 1, output: 2 }\n'
    directory = write_config(tmp_path, {"providers.yaml": bad, "routes.yaml": "default: echo\n"})
    run = router("check", "--config-dir", str(directory))
    assert run.code == 1
    assert "providers.yaml:7:7: error: providers.echo.pricing.gpt-[: bad glob" in run.stdout


def test_a_missing_price_is_a_schema_error(tmp_path) -> None:
    bad = PROVIDERS.replace("{ input: 1, output: 2 }", "{ input: 1 }")
    directory = write_config(tmp_path, {"providers.yaml": bad, "routes.yaml": "default: echo\n"})
    run = router("check", "--config-dir", str(directory))
    assert run.code == 1 and "providers.yaml:6:12" in run.stdout and "output" in run.stdout


def test_usage_costs_what_the_first_matching_price_says(config) -> None:
    with Gateway(config, env={"ADMIN_API_KEY": ADMIN}) as gateway:
        client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)
        priced = client.chat.completions.create(
            model="echo-priced", messages=[{"role": "user", "content": "count the cost"}]
        ).usage
        other = client.chat.completions.create(
            model="plain", messages=[{"role": "user", "content": "and this one"}]
        ).usage
        assert priced is not None and other is not None
        expected = {
            "echo-priced": (priced.prompt_tokens * 3.0 + priced.completion_tokens * 15.0) / 1e6,
            "plain": (other.prompt_tokens * 1 + other.completion_tokens * 2) / 1e6,
        }
        deadline = time.monotonic() + 5
        while True:
            answer = httpx.get(
                gateway.url + "/api/usage?group_by=model",
                headers={"authorization": f"Bearer {ADMIN}"},
            ).json()
            costs = {row["model"]: row["cost_usd"] for row in answer["rows"]}
            if len(costs) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert costs == pytest.approx(expected)
        assert answer["totals"]["cost_usd"] == pytest.approx(sum(expected.values()))
