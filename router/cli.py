"""The `router` command: serve, check, compile, explain, test, oauth."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from router.protocols import ir


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _load_env_file()
    if not Path(args.config_dir).is_dir():
        print(
            f"router {args.command}: config dir {args.config_dir} does not exist", file=sys.stderr
        )
        return 2
    try:
        return int(args.run(args))
    except BrokenPipeError:  # `router compile | head`
        return 0


def _load_env_file() -> None:
    """`.env` in the working directory, as the seed read it. The real environment wins:
    a variable already set is never replaced by the file's value."""
    from dotenv import load_dotenv

    try:
        load_dotenv(Path(".env"), override=False)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"router: .env not loaded: {exc}", file=sys.stderr)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("router")
    except PackageNotFoundError:  # run from a checkout that was not installed
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="router", description="A YAML-compiled AI gateway.")
    parser.add_argument("--version", action="version", version=f"router {version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, run: Any) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument(
            "--config-dir",
            default=".",
            metavar="DIR",
            help="directory with providers.yaml, routes.yaml and pipelines/ (default: .)",
        )
        sub.set_defaults(run=run)
        return sub

    serve = command("serve", "run the gateway", _serve)
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    serve.add_argument(
        "--port", type=int, default=3000, help="port to listen on (default: %(default)s)"
    )
    serve.add_argument(
        "--workers", type=int, default=1, help="worker processes (default: %(default)s)"
    )
    serve.add_argument(
        "--state-dir",
        metavar="DIR",
        help="operator state (records, usage): default $ROUTER_STATE_DIR, else ./.router",
    )

    check = command("check", "validate the config; print every problem", _check)
    check.add_argument("--strict", action="store_true", help="treat warnings as errors")

    command("compile", "print the canonical, deterministic dump of the compiled plan", _compile)

    explain = command("explain", "show the decision trail of one request", _explain)
    explain.add_argument("--model", help="the client's model (or give a body or Gemini path)")
    explain.add_argument(
        "--protocol", choices=ir.PROTOCOLS, help="default: from --path, else openai-chat"
    )
    explain.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'K: V'",
        help="a request header (repeatable)",
    )
    explain.add_argument("--path", help="request path, e.g. /claude-custom/v1/messages")
    explain.add_argument(
        "--state-dir",
        metavar="DIR",
        help="the server's state dir, for its runtime overrides: default $ROUTER_STATE_DIR, "
        "else ./.router",
    )
    explain.add_argument("--body", metavar="FILE", help="JSON or YAML request body ('-': stdin)")

    test = command("test", "run route test cases", _test)
    test.add_argument(
        "files",
        nargs="*",
        metavar="FILE",
        help="test files (default: routes.test.yaml in the config dir)",
    )
    oauth = command("oauth", "sign in a Google OAuth provider instance", _oauth)
    oauth.add_argument("provider", help="gemini-cli-oauth or gemini-antigravity (type or pool)")
    oauth.add_argument("--instance", help="instance id (default: the pool's first)")
    oauth.add_argument("--callback-host", help="external host for the callback (Docker, remote)")
    oauth.add_argument("--callback-port", type=int, help="8085 (gemini), 8086 (antigravity)")
    return parser


def _oauth(args: argparse.Namespace) -> int:
    from router.providers.oauth_cli import run_oauth_cli

    return run_oauth_cli(
        args.provider,
        args.instance,
        args.config_dir,
        external_host=args.callback_host,
        callback_port=args.callback_port,
    )


def _serve(args: argparse.Namespace) -> int:
    from router.server.serve import main as serve

    return serve(args.config_dir, args.host, args.port, args.workers, args.state_dir)


def _check(args: argparse.Namespace) -> int:
    from router.compiler import compile_config
    from router.config.diagnostics import summary

    plan, diagnostics = compile_config(args.config_dir, strict=args.strict)
    for diagnostic in diagnostics:
        print(diagnostic)
    line = summary(diagnostics)
    if plan is not None:
        line += f"; generation {plan.generation}"
    print(line)
    return 0 if plan is not None else 1


def _stored_overrides(state_dir: str | None) -> dict[tuple[str, str], bool]:
    """The runtime overrides a server with this state dir routes by."""
    from router.records import store
    from router.state import overrides

    return overrides.stored(store.database_path(store.state_dir(state_dir)))


def _compile_or_report(
    config_dir: str, overrides: dict[tuple[str, str], bool] | None = None
) -> Any:
    from router.compiler import compile_config
    from router.config.diagnostics import summary

    plan, diagnostics = compile_config(config_dir, overrides=overrides)
    if plan is None:
        for diagnostic in diagnostics:
            print(diagnostic, file=sys.stderr)
        print(summary(diagnostics), file=sys.stderr)
    return plan


def _compile(args: argparse.Namespace) -> int:
    from router.compiler import dump

    plan = _compile_or_report(args.config_dir)
    if plan is None:
        return 1
    sys.stdout.write(dump(plan))
    return 0


def _explain(args: argparse.Namespace) -> int:
    from router.compiler.explain import explain
    from router.compiler.probe import header_lines, make_probe

    try:
        headers = header_lines(args.header)
    except ValueError as exc:
        print(f"router explain: --{exc}", file=sys.stderr)
        return 2
    body = None
    if args.body is not None:
        body = _read_body(args.body)
        if body is None:
            return 2
    try:
        probe = make_probe(
            protocol=args.protocol, model=args.model, path=args.path, headers=headers, body=body
        )
    except ValueError as exc:
        print(f"router explain: {exc}", file=sys.stderr)
        return 2
    plan = _compile_or_report(args.config_dir, _stored_overrides(args.state_dir))
    if plan is None:
        return 1
    sys.stdout.write(explain(plan, probe))
    return 0


def _read_body(name: str) -> dict[str, Any] | None:
    import yaml

    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
        body = yaml.safe_load(text)  # JSON is YAML
    except (OSError, yaml.YAMLError, json.JSONDecodeError) as exc:
        print(f"router explain: --body {name}: {exc}", file=sys.stderr)
        return None
    if not isinstance(body, dict):
        print(f"router explain: --body {name}: expected a JSON object", file=sys.stderr)
        return None
    return body


def _test(args: argparse.Namespace) -> int:
    from router.compiler.routetest import load_tests, run_tests, summary

    files = args.files or [str(Path(args.config_dir) / "routes.test.yaml")]
    outcomes = []
    failed = False
    for name in files:
        shown = name if args.files else "routes.test.yaml"
        tests = load_tests(Path(name), shown)
        for diagnostic in tests.diagnostics:
            print(diagnostic)
        if tests.diagnostics:
            failed = True
            continue
        results, config_errors = run_tests(args.config_dir, tests)
        for diagnostic in config_errors:
            print(diagnostic)
        for outcome in results:
            print(outcome)
        outcomes.extend(results)
    print(summary(outcomes))
    return 1 if failed or any(not o.passed for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
