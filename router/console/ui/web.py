"""What every console page shares: the Jinja2 environment (autoescape on), the security
headers, the admin check that sends a browser to the login page, and the static files.

The Content-Security-Policy allows nothing inline (no script, no style attribute), so
the pages carry no JavaScript or CSS of their own: console.js and console.css do it all,
and htmx is told not to add its indicator <style> (the htmx-config meta tag)."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader
from litestar import Request, Response

from router.compiler.plan import Plan
from router.protocols import ir
from router.server.management import admin_access

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
LOGIN = "/ui/login"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}

_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".LICENSE": "text/plain; charset=utf-8",
}


def _load_static() -> dict[str, tuple[bytes, str]]:
    files = {}
    for path in sorted(STATIC_DIR.iterdir()):
        kind = _TYPES.get(path.suffix)
        if path.is_file() and kind:
            files[path.name] = (path.read_bytes(), kind)
    return files


STATIC = _load_static()
# in the static URLs (?v=), so that a browser's cached copy never outlives an upgrade
ASSET_VERSION = hashlib.sha256(b"".join(body for body, _ in STATIC.values())).hexdigest()[:12]


def clock(moment: float | None) -> str:
    if not moment:
        return "-"
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def stamp(moment: float | None) -> str:
    """A short UTC time for tables: 12-04 16:38:25."""
    if not moment:
        return "-"
    return datetime.fromtimestamp(moment, UTC).strftime("%m-%d %H:%M:%S")


def span(seconds: float | None) -> str:
    """3725 -> '1h 2m'; 42.5 -> '42s'."""
    if seconds is None:
        return "-"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def ago(moment: float | None) -> str:
    if not moment:
        return "never"
    return f"{span(max(0.0, time.time() - moment))} ago"


def number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def millis(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.0f} ms"


def size(count: int | None) -> str:
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{count} B"  # pragma: no cover


ENV = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters.update(
    clock=clock, stamp=stamp, span=span, ago=ago, number=number, millis=millis, size=size
)
ENV.globals["asset"] = lambda name: f"/ui/static/{name}?v={ASSET_VERSION}"


def secured(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    return response


def is_fragment(request: Request) -> bool:
    """An htmx request for a part of a page (not a boosted navigation)."""
    headers = request.headers
    if headers.get("hx-boosted") or headers.get("hx-history-restore-request"):
        return False
    return headers.get("hx-request") == "true"


def render(request: Request, template: str, context: dict[str, Any], status: int = 200) -> Response:
    document = {"path": request.url.path, "csrf": csrf_token(request), **context}
    html = ENV.get_template(template).render(document)
    response = Response(html, status_code=status, media_type="text/html; charset=utf-8")
    response.headers["cache-control"] = "no-store"
    return secured(response)


def redirect(location: str, status: int = 303) -> Response:
    response = Response(
        b"", status_code=status, headers={"location": location}, media_type="text/plain"
    )
    response.headers["cache-control"] = "no-store"
    return secured(response)


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a console path, never another site."""
    if not target or not target.startswith("/ui/") or target.startswith("//") or "\\" in target:
        return "/ui/"
    return target


def to_login(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    location = f"{LOGIN}?next={quote(safe_next(target), safe='/')}"
    if is_fragment(request):  # htmx follows HX-Redirect with a full page load
        headers = {"hx-redirect": location}
        response = Response(b"", status_code=401, headers=headers, media_type="text/plain")
        return secured(response)
    return redirect(location)


def admitted(request: Request) -> Plan | Response:
    """The live plan for a request showing an admin session or key; otherwise the answer
    to send: the login page (401/403), or an error page (no config loaded). The session's
    CSRF token goes into the page (<meta name="csrf-token">) for console.js."""
    try:
        plan, session = admin_access(request)
    except ir.Error as error:
        if error.status in (401, 403):
            return to_login(request)
        context = {"title": "Unavailable", "status": error.status, "message": error.message}
        return render(request, "error.html", context, status=error.status)
    request.state.csrf = session.csrf if session is not None else ""
    return plan


def csrf_token(request: Request) -> str:
    """The CSRF token of the session that opened this page ("" for an admin key: then
    console.js asks GET /api/session)."""
    return request.state.get("csrf", "") or ""


def static_file(name: str) -> Response:
    found = STATIC.get(name)
    if found is None:
        response = Response(b"not found", status_code=404, media_type="text/plain")
        return secured(response)
    body, kind = found
    response = Response(body, media_type=kind)
    response.headers["cache-control"] = "public, max-age=86400"
    return secured(response)
