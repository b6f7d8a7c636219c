"""`router compile`: the canonical dump, snapshot-tested, deterministic, secret-free."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from router.compiler import compile_config, dump
from tests.routercli import FIXTURES, REPO, copy_shipped, router

SECRETS = {
    "OPENAI_API_KEY": "sk-live-openai-secret",
    "CLAUDE_API_KEY": "sk-ant-live-secret",
    "TEAM_KEY": "team-key-secret",
    "OPS_KEY": "ops-key-secret",
    "ANTIGRAVITY_SECRET": "antigravity-secret",
    "UPSTREAM_KEY": "upstream-key-secret",
    "PROXY_PASSWORD": "proxy-password-secret",
}


def test_compile_shipped_config(tmp_path: Path, snapshot) -> None:
    run = router("compile", "--config-dir", str(copy_shipped(tmp_path / "shipped")))
    assert run.code == 0 and run.stderr == ""
    assert run.stdout == snapshot


@pytest.mark.parametrize("name", ["minimal", "anchors"])
def test_compile_fixture(name: str, snapshot) -> None:
    run = router("compile", "--config-dir", str(FIXTURES / name))
    assert run.code == 0, run.output
    assert run.stdout == snapshot


def test_compile_fixture_with_secrets(snapshot) -> None:
    run = router("compile", "--config-dir", str(FIXTURES / "failover"), env=SECRETS)
    assert run.code == 0, run.output
    assert run.stdout == snapshot
    for value in SECRETS.values():
        assert value not in run.stdout
    assert "static-client-key" not in run.stdout  # a key written in routes.yaml is a secret too


def test_compile_is_byte_identical_across_runs_dirs_and_env_order(tmp_path: Path) -> None:
    first = shutil.copytree(FIXTURES / "failover", tmp_path / "a" / "config")
    second = shutil.copytree(FIXTURES / "failover", tmp_path / "elsewhere" / "b")
    forward = dict(SECRETS)
    backward = dict(reversed(list(SECRETS.items())))
    runs = [
        router("compile", "--config-dir", str(first), env=forward),
        router("compile", "--config-dir", str(second), env=backward),
        router("compile", "--config-dir", "config", env=backward, cwd=first.parent),
    ]
    assert all(r.code == 0 for r in runs)
    assert runs[0].stdout == runs[1].stdout == runs[2].stdout
    assert str(tmp_path) not in runs[0].stdout


def test_generation_tracks_secrets_but_the_dump_does_not() -> None:
    plan_a, _ = compile_config(FIXTURES / "failover", env=SECRETS)
    plan_b, _ = compile_config(FIXTURES / "failover", env={**SECRETS, "OPENAI_API_KEY": "rotated"})
    plan_c, _ = compile_config(FIXTURES / "failover", env=dict(reversed(list(SECRETS.items()))))
    assert plan_a and plan_b and plan_c
    assert dump(plan_a) == dump(plan_b)
    assert plan_a.generation != plan_b.generation
    assert plan_a.generation == plan_c.generation
    assert len(plan_a.generation) == 12 and int(plan_a.generation, 16) >= 0
    assert "sk-live" not in repr(plan_a)


def test_generation_ignores_formatting_and_comments(tmp_path: Path) -> None:
    directory = shutil.copytree(FIXTURES / "minimal", tmp_path / "c")
    before, _ = compile_config(directory, env={})
    routes = directory / "routes.yaml"
    routes.write_text(
        "# a comment\n\n" + routes.read_text().replace("default: echo", "default:   'echo'")
    )
    after, _ = compile_config(directory, env={})
    assert before and after and before.generation == after.generation


def test_compile_reports_errors_on_stderr() -> None:
    run = router("compile", "--config-dir", str(FIXTURES / "broken" / "bad-glob"))
    assert run.code == 1
    assert run.stdout == ""
    assert "routes.yaml:4:21: error: routes[0].match.model: bad glob" in run.stderr


def test_shipped_routes_file_is_the_one_in_the_repo() -> None:
    # the snapshot above is of the repository's own config
    assert (REPO / "routes.yaml").read_text().count("name: claude-code") == 1


def _big_routes(count: int) -> str:
    lines = ["default: echo", "routes:"]
    for i in range(count):
        if i % 10 == 0:
            lines += [f"  - name: r{i}", f"    match: {{model: 'family{i}-*'}}", "    to: [echo]"]
        elif i % 10 == 1:
            lines += [
                f"  - name: r{i}",
                f'    match: {{model: m{i}, when: "body.tier == `{i % 7}`"}}',
                "    to: {provider: echo, model: upstream}",
            ]
        else:
            lines += [
                f"  - name: r{i}",
                f"    match: {{model: [model-{i}, alias-{i}]}}",
                "    to: echo",
            ]
    return "\n".join(lines) + "\n"


def test_ten_thousand_routes_compile_fast_and_resolve_without_scanning(tmp_path: Path) -> None:
    (tmp_path / "providers.yaml").write_text("providers:\n  echo: {type: echo}\n")
    (tmp_path / "routes.yaml").write_text(_big_routes(10_000))
    started = time.perf_counter()
    plan, diagnostics = compile_config(tmp_path, env={})
    elapsed = time.perf_counter() - started
    assert plan is not None, diagnostics
    assert diagnostics == []
    assert elapsed < 3.0  # ~0.5 s on a small 2-core machine; generous for shared CI

    def resolve(model: str, body: dict | None = None) -> str:
        found = plan.resolve(protocol="openai-chat", model=model, headers={}, body=body or {})
        return found.route.name

    assert resolve("model-9999") == "r9999"
    assert resolve("alias-5002") == "r5002"
    assert resolve("family9990-x") == "r9990"
    assert resolve("m9991", {"tier": 9991 % 7}) == "r9991"
    assert resolve("m9991", {"tier": -1}) == "default"
    started = time.perf_counter()
    for _ in range(2000):
        resolve("model-9999")
        resolve("unknown-model")
    per_call = (time.perf_counter() - started) / 4000
    assert per_call < 200e-6  # a few microseconds: no linear scan of 10,000 routes


def test_libyaml_and_pure_python_emitters_write_the_same_dump() -> None:
    import yaml

    from router.compiler.dump import _Dumper, canonical

    class PurePython(yaml.SafeDumper):
        pass

    PurePython.add_representer(list, _Dumper.represent_list)
    options = {"sort_keys": False, "default_flow_style": False, "allow_unicode": True}
    for name in ("failover", "anchors", "minimal"):
        plan, _ = compile_config(FIXTURES / name, env=SECRETS)
        assert plan is not None
        data = canonical(plan)
        fast = yaml.dump(data, Dumper=_Dumper, width=1_000_000, **options)
        slow = yaml.dump(data, Dumper=PurePython, width=1_000_000, **options)
        assert fast == slow == dump(plan)


def _write(directory: Path, providers: str, routes: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "providers.yaml").write_text(providers)
    (directory / "routes.yaml").write_text(routes)
    return directory


@pytest.mark.parametrize("name", ["ui", "metrics", "api"])
def test_a_pool_named_like_a_path_of_the_server_is_an_error(tmp_path: Path, name: str) -> None:
    """`/ui/...`, `/metrics`, `/api/...` are the console's: a pool of that name could not
    be reached by its path prefix."""
    directory = _write(tmp_path, f"providers:\n  {name}:\n    type: echo\n", f"default: {name}\n")
    plan, diagnostics = compile_config(directory)
    assert plan is None
    [error] = [d for d in diagnostics if d.severity == "error"]
    assert f"provider name {name!r} is reserved" in str(error)
    assert str(error).startswith("providers.yaml:2:3")


OVERRIDDEN_PROVIDERS = """\
providers:
  pool:
    type: openai-custom
    instances:
      - { id: first, base_url: "http://127.0.0.1:9/v1", api_key: k }
      - { id: second, enabled: false, base_url: "http://127.0.0.1:9/v1", api_key: k }
  spare:
    type: openai-custom
    instances:
      - { id: only, enabled: false, base_url: "http://127.0.0.1:9/v1", api_key: k }
"""
OVERRIDDEN_ROUTES = """\
default: pool
routes:
  - name: spare-route
    match: { model: spare-* }
    to: spare
"""


def test_runtime_overrides_route_but_leave_dump_and_generation(tmp_path: Path) -> None:
    """Overrides set `enabled` as routed (a route whose only instance was disabled in the
    file becomes active), while the dump and generation keep the files' values."""
    directory = _write(tmp_path, OVERRIDDEN_PROVIDERS, OVERRIDDEN_ROUTES)
    plain, _ = compile_config(directory)
    overrides = {("pool", "first"): False, ("pool", "second"): True, ("spare", "only"): True}
    overridden, _ = compile_config(directory, overrides=overrides)
    assert plain is not None and overridden is not None
    first, second = overridden.providers["pool"].instances
    assert (first.enabled, first.enabled_in_file, first.override) == (False, True, False)
    assert (second.enabled, second.enabled_in_file, second.override) == (True, False, True)
    plain_first = plain.providers["pool"].instances[0]
    assert (plain_first.enabled, plain_first.override) == (True, None)
    [spare_plain] = [r for r in plain.routes if r.name == "spare-route"]
    [spare_now] = [r for r in overridden.routes if r.name == "spare-route"]
    assert not spare_plain.active and spare_now.active
    chosen = overridden.resolve(protocol="openai-chat", model="spare-x", headers={}, body={})
    assert chosen.route.name == "spare-route"
    assert dump(overridden) == dump(plain)
    assert overridden.generation == plain.generation
