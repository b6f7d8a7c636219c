"""What the pages show, shaped for the templates: the dashboard's charts and pool tiles,
the health of the instances as /provider_health shows it, the compiled routes."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from litestar import Request

from router.compiler.plan import Plan
from router.console.config_files_api import credentials_expiry
from router.console.ui import charts
from router.providers.google_oauth import oauth_settings, signs_in_with_google
from router.server.health_view import merge, worker_books
from router.server.management import provider_health_document


async def health_document(request: Request, plan: Plan) -> dict[str, Any]:
    """The instances' health as `GET /provider_health` answers it: merged over the
    server's workers."""
    document = provider_health_document(plan)
    merge(document, await worker_books(request, plan), per_worker=False)
    return document


def oauth_credentials(plan: Plan) -> dict[str, dict[str, dict[str, Any]]]:
    """For each Google OAuth pool, each instance's credentials file: where it is (relative
    to the config dir when inside it), whether it exists, and when its access token
    expires. Never its tokens. Blocking (reads files)."""
    found: dict[str, dict[str, dict[str, Any]]] = {}
    root = Path(plan.config_dir).resolve() if plan.config_dir else None
    for name, pool in plan.providers.items():
        if not signs_in_with_google(pool.type):
            continue
        rows = found.setdefault(name, {})
        for instance in pool.instances:
            path = oauth_settings(pool.type, pool, instance, plan.config_dir).credentials
            shown = str(path)
            if root is not None and path.resolve().is_relative_to(root):
                shown = os.path.relpath(path.resolve(), root).replace(os.sep, "/")
            row: dict[str, Any] = {"path": shown, "exists": False, "expiry": None}
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                rows[instance.id] = row
                continue
            row["exists"] = True
            try:
                row["expiry"] = credentials_expiry(json.loads(text))
            except ValueError:
                row["expiry"] = None
            rows[instance.id] = row
    return found


def chart_list(figures: dict[str, Any]) -> list[Any]:
    when = figures["span"]
    tokens = [
        (moment, used + more)
        for (moment, used), (_, more) in zip(
            figures["tokens_in"], figures["tokens_out"], strict=True
        )
    ]
    return [
        charts.line_chart(figures["rps"], title="Requests per second", span=when),
        charts.line_chart(
            figures["error_rate"], title="Error rate (status ≥ 400)", unit="%", span=when
        ),
        charts.line_chart(
            figures["p50"],
            title="Latency",
            unit=" ms",
            label="p50",
            more=[("p95", figures["p95"])],
            span=when,
        ),
        charts.bar_chart(tokens, title="Tokens per minute (input + output)", span=when),
    ]


def tiles(document: dict[str, Any]) -> list[dict[str, Any]]:
    """A tile per pool of a /provider_health document: its instances' states."""
    found = []
    for name, pool in document["providers"].items():
        instances = []
        for view in pool["instances"]:
            if not view["enabled"]:
                state = "disabled"
            elif not view["configured"]:
                state = "unconfigured"
            elif view["probing"]:
                state = "probing"
            else:
                state = "healthy" if view["healthy"] else "down"
            instances.append({"id": view["id"], "state": state, "last_error": view["last_error"]})
        found.append(
            {
                "name": name,
                "type": pool["type"],
                "reachable": pool["reachable"],
                "instances": instances,
                "healthy": sum(1 for i in instances if i["state"] == "healthy"),
                "usable": sum(1 for i in instances if i["state"] in ("healthy", "down", "probing")),
            }
        )
    return found


def route_rows(plan: Plan) -> list[dict[str, Any]]:
    rows = []
    for route in plan.routes:
        match = []
        if route.match is not None:
            if route.match.models:
                match.append("model: " + ", ".join(route.match.models))
            if route.match.protocols:
                match.append("protocol: " + ", ".join(route.match.protocols))
            if route.match.when is not None:
                match.append(f"when: {route.match.when}")
        active = {id(t) for t in route.targets}
        targets = [
            {
                "provider": t.provider,
                "model": t.model,
                "pipeline": t.pipeline.name if t.pipeline else None,
                "skipped": id(t) not in active,
            }
            for t in route.declared or route.targets
        ]
        options = ["strict"] if route.strict else []
        if route.retry_on:
            options.append("retry on " + ", ".join(sorted(map(str, route.retry_on))))
        if route.max_attempts:
            options.append(f"max attempts {route.max_attempts}")
        rows.append(
            {
                "name": route.name,
                "source": route.source,
                "active": route.active,
                "match": match,
                "targets": targets,
                "options": options,
            }
        )
    return rows


def usage_charts(days: list[dict[str, Any]]) -> list[Any]:
    """Requests, tokens and cost per UTC day (the usage API's rows grouped by day)."""

    def series(value: Any) -> list[tuple[float, float]]:
        return [(_midnight(row["day"]), value(row)) for row in days if row.get("day")]

    return [
        charts.line_chart(series(lambda r: r["requests"]), title="Requests per day"),
        charts.line_chart(
            series(lambda r: r["input_tokens"]),
            title="Tokens per day",
            label="input",
            more=[("output", series(lambda r: r["output_tokens"]))],
        ),
        charts.line_chart(series(lambda r: r["cost_usd"]), title="Cost per day", unit=" USD"),
    ]


def _midnight(day: str) -> float:
    return datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()
