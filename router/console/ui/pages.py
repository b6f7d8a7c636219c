"""The web console's pages (issue 16): server-rendered Jinja2 templates, htmx for the
parts that refresh or act, charts as SVG drawn here. Every page needs an admin session
(or key) and sends a browser without one to /ui/login; the login page and the static
files are open.

The pages read what the admin API reads, through the same functions (management,
providers_api, config_api, records.usage, compiler.explain), and act through the admin
API itself: console.js sends each unsafe request with the session's `x-csrf-token`."""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import os
from typing import Any

from litestar import Request, Response, get

from router.compiler import dump
from router.compiler.explain import explain as explain_text
from router.compiler.probe import header_lines, make_probe
from router.console import providers_api
from router.console.config_api import read_only
from router.console.config_writes import config_files, read
from router.console.secrets import mask_text
from router.console.ui import series, views
from router.console.ui.highlight import highlight_yaml
from router.console.ui.web import (
    admitted,
    is_fragment,
    redirect,
    render,
    safe_next,
    secured,
    static_file,
)
from router.protocols import ir
from router.records import usage
from router.records.reader import Unavailable
from router.server.system import system_document, uptime_seconds

log = logging.getLogger("router.console")

DEFAULT_GROUPS = ("day", "pool", "model")


async def _from_store(request: Request, query: Any) -> tuple[Any, str | None]:
    """(what `query` read from the records' store, None) or (None, why it could not);
    `query` takes the worker's records reader."""
    reader = request.app.state.records.reader
    if reader is None:
        return None, "the state store is not available (see the log)"
    try:
        return await asyncio.to_thread(query, reader), None
    except Unavailable as exc:
        log.warning("console: %s", exc)
        return None, str(exc)


def _page_or_fragment(
    request: Request, page: str, fragment: str, context: dict[str, Any]
) -> Response:
    return render(request, fragment if is_fragment(request) else page, context)


def _events_available(request: Request) -> bool:
    return any(route.path == "/api/events" for route in request.app.routes)


# ---- open: the redirect, login, static files


@get("/", include_in_schema=False)
async def root() -> Response:
    return redirect("/ui/", status=302)


@get("/ui/login", include_in_schema=False)
async def login(request: Request) -> Response:
    context = {"title": "Sign in", "next": safe_next(request.query_params.get("next"))}
    return render(request, "login.html", context)


@get("/ui/static/{name:str}", include_in_schema=False)
async def static(name: str) -> Response:
    return static_file(name)


# ---- dashboard


@get("/ui", include_in_schema=False)
async def dashboard(request: Request) -> Response:
    plan = admitted(request)
    if isinstance(plan, Response):
        return plan
    holder = request.app.state.holder
    figures, problem = await _from_store(
        request, lambda r: r.read(lambda c, d: series.last_hour(c, dialect=d))
    )
    context = {
        "title": "Dashboard",
        "plan": plan,
        "figures": figures,
        "charts": views.chart_list(figures) if figures else [],
        "store_problem": problem,
        "tiles": views.tiles(await views.health_document(request, plan)),
        "loaded_at": holder.loaded_at,
        "last_error": holder.last_error,
        "uptime": uptime_seconds(),
        "worker": os.getpid(),
    }
    return _page_or_fragment(request, "dashboard.html", "_dashboard.html", context)


# ---- providers


@get("/ui/providers", include_in_schema=False)
async def providers(request: Request) -> Response:
    plan = admitted(request)
    if isinstance(plan, Response):
        return plan
    pools = sorted(plan.providers.values(), key=lambda p: p.name)
    document = await providers_api.providers_document(request, plan, pools)
    oauth = await asyncio.to_thread(views.oauth_credentials, plan)
    context = {
        "title": "Providers",
        "plan": plan,
        "pools": document["providers"],
        "oauth": oauth,
        "day": document["day"],
        "usage_available": document["usage_available"],
        "worker": os.getpid(),
    }
    return _page_or_fragment(request, "providers.html", "_providers.html", context)


# ---- routes


@get("/ui/routes", include_in_schema=False)
async def routes(request: Request) -> Response:
    plan = admitted(request)
    if isinstance(plan, Response):
        return plan
    context = {
        "title": "Routes",
        "plan": plan,
        "routes": views.route_rows(plan),
        "protocols": ir.PROTOCOLS,
        "explained": None,
        "problem": None,
        "query": {},
    }
    return render(request, "routes.html", context)


@get("/ui/routes/explain", include_in_schema=False)
async def explain(request: Request) -> Response:
    """`router explain` for a model, protocol, optional path and headers (one `Name: value`
    a line), against the live plan."""
    plan = admitted(request)
    if isinstance(plan, Response):
        return plan
    query = request.query_params
    protocol = query.get("protocol") or None
    if protocol is not None and protocol not in ir.PROTOCOLS:
        explained, problem = None, f"unknown protocol {protocol!r}"
    else:
        try:
            probe = make_probe(
                protocol=protocol,
                model=query.get("model") or None,
                path=query.get("path") or None,
                headers=header_lines((query.get("headers") or "").splitlines()),
            )
            explained, problem = explain_text(plan, probe), None
        except ValueError as exc:
            explained, problem = None, str(exc)
    context = {
        "title": "Routes",
        "plan": plan,
        "routes": views.route_rows(plan) if not is_fragment(request) else [],
        "protocols": ir.PROTOCOLS,
        "explained": explained,
        "problem": problem,
        "query": dict(query),
    }
    return _page_or_fragment(request, "routes.html", "_explain.html", context)


# ---- config


@get("/ui/config", include_in_schema=False)
async def config(request: Request) -> Response:
    """The files as GET /api/config shows them (literal secrets ***); each one's editor
    posts to /api/config, which checks it as `router check` does."""
    plan = admitted(request)
    if isinstance(plan, Response):
        return plan
    config_dir = request.app.state.holder.config_dir
    files = {}
    for name in config_files(config_dir):
        text = read(config_dir, name)
        if text is not None:
            files[name] = mask_text(name, text)
    context = {
        "title": "Config",
        "plan": plan,
        "files": files,
        "highlighted": {name: highlight_yaml(text) for name, text in files.items()},
        "compiled": dump(plan),
        "read_only": read_only(plan),
    }
    return render(request, "config.html", context)


# ---- usage and logs


def _usage_params(request: Request) -> dict[str, Any]:
    query = dict(request.query_params)
    if "group_by" in query:  # the form's: a hidden empty one, then those checked
        groups = [
            g
            for value in request.query_params.getall("group_by", [])
            for g in value.split(",")
            if g
        ]
    else:
        groups = list(DEFAULT_GROUPS)
    query["group_by"] = ",".join(groups)
    return query


USAGE_COLUMNS = (
    "requests",
    "errors_4xx",
    "errors_5xx",
    "cancelled",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "avg_latency_ms",
    "cost_usd",
)


def usage_csv_text(document: dict[str, Any]) -> str:
    """The usage table's rows (as the page shows them, without the total) as CSV."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    groups = list(document["group_by"])
    writer.writerow([*groups, *USAGE_COLUMNS])
    for row in document["rows"]:
        errors = row.get("errors") or {}
        requests = row.get("requests") or 0
        latency = round(row["duration_s"] / requests * 1000, 1) if requests else ""
        writer.writerow(
            [
                *("" if row.get(g) is None else row.get(g) for g in groups),
                requests,
                errors.get("4xx", 0),
                errors.get("5xx", 0),
                errors.get("cancelled", 0),
                row.get("input_tokens", 0),
                row.get("output_tokens", 0),
                row.get("cached_tokens", 0),
                row.get("reasoning_tokens", 0),
                latency,
                f"{row.get('cost_usd') or 0:.4f}",
            ]
        )
    return out.getvalue()


@get("/ui/usage.csv", include_in_schema=False)
async def usage_csv(request: Request) -> Response:
    """The usage page's table as a CSV download, for the same from/to/group_by."""
    plan = admitted(request)
    if isinstance(plan, Response):
        return plan
    query = _usage_params(request)
    try:
        first, last, grouped = usage.usage_query(query)
    except ir.Error as error:
        return secured(Response(error.message, status_code=400, media_type="text/plain"))
    document, problem = await _from_store(request, lambda r: r.usage(first, last, grouped))
    if document is None:
        return secured(Response(problem or "", status_code=503, media_type="text/plain"))
    name = f"usage-{document['from']}-{document['to']}.csv"
    response = Response(
        usage_csv_text(document),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )
    response.headers["cache-control"] = "no-store"
    return secured(response)


@get("/ui/usage", include_in_schema=False)
async def usage_page(request: Request) -> Response:
    plan = admitted(request)
    if isinstance(plan, Response):
        return plan
    query = _usage_params(request)
    groups = [g for g in query["group_by"].split(",") if g]
    document, daily, problem = None, None, None
    try:
        first, last, grouped = usage.usage_query(query)
    except ir.Error as error:
        first, last, grouped, problem = query.get("from"), query.get("to"), (), error.message
    else:
        found, problem = await _from_store(
            request,
            lambda r: (r.usage(first, last, grouped), r.usage(first, last, ("day",))),
        )
        document, daily = found or (None, None)
    context = {
        "charts": views.usage_charts(daily["rows"]) if daily else [],
        "title": "Usage",
        "plan": plan,
        "usage": document,
        "problem": problem,
        "first": first or "",
        "last": last or "",
        "groups": grouped or tuple(groups),
        "all_groups": usage.GROUPS,
    }
    return _page_or_fragment(request, "usage.html", "_usage.html", context)


@get("/ui/logs", include_in_schema=False)
async def logs(request: Request) -> Response:
    plan = admitted(request)
    if isinstance(plan, Response):
        return plan
    query = {k: v for k, v in request.query_params.items() if k in ("pool", "model", "status")}
    query["limit"] = "100"
    document, problem = None, None
    try:
        limit, before, filters = usage.requests_query(query)
    except ir.Error as error:
        problem = error.message
    else:
        document, problem = await _from_store(request, lambda r: r.requests(limit, before, filters))
    context = {
        "title": "Logs",
        "plan": plan,
        "requests": document["requests"] if document else [],
        "problem": problem,
        "filters": query,
        "pools": sorted(plan.providers),
        "events": _events_available(request),
    }
    return _page_or_fragment(request, "logs.html", "_logs.html", context)


# ---- system


@get("/ui/system", include_in_schema=False)
async def system(request: Request) -> Response:
    plan = admitted(request)
    if isinstance(plan, Response):
        return plan
    holder = request.app.state.holder
    workers = providers_api.worker_count()
    context = {
        "title": "System",
        "plan": plan,
        "system": system_document(),
        "mode": "workers" if workers > 1 else "standalone",
        "workers": workers,
        "loaded_at": holder.loaded_at,
        "last_error": holder.last_error,
        "config_dir": holder.config_dir,
    }
    return render(request, "system.html", context)


ROUTES = [
    root,
    login,
    static,
    dashboard,
    providers,
    routes,
    explain,
    config,
    usage_page,
    usage_csv,
    logs,
    system,
]
