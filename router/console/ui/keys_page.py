"""The console's Keys page: every client key (configured and runtime) with its scopes,
limits, usage and expiry; a form to make a key (shown once, by the browser, from the
answer of `POST /api/keys`: the page itself never holds a key), one to change a runtime
key's scopes, limits and expiry, and a revoke button that asks first. The page reads what
`GET /api/keys` answers (router.console.keys_api) and acts through the admin API."""

from __future__ import annotations

import logging
import sqlite3

from litestar import Request, Response, get

from router.access.keys import LIMIT_NAMES
from router.console.keys_api import keys_document
from router.console.ui.web import admitted, is_fragment, render
from router.protocols import ir

log = logging.getLogger("router.console")

LIMIT_LABELS = {
    "rpm": "requests / minute",
    "tpm": "tokens / minute",
    "concurrency": "in flight",
    "daily_tokens": "tokens / day",
    "monthly_requests": "requests / month",
}


@get("/ui/keys", include_in_schema=False)
async def keys_page(request: Request) -> Response:
    plan = admitted(request)
    if isinstance(plan, Response):
        return plan
    document, problem = None, None
    try:
        document = await keys_document(request, plan)
    except ir.Error as error:
        problem = error.message
    except sqlite3.Error as exc:
        log.warning("console: the state store cannot be read: %s", exc)
        problem = f"the state store cannot be read: {exc}"
    context = {
        "title": "Keys",
        "plan": plan,
        "keys": document["keys"] if document else [],
        "day": document["day"] if document else None,
        "month": document["month"] if document else None,
        "usage_problem": document["usage_problem"] if document else None,
        "problem": problem,
        "pools": sorted(plan.providers),
        "limit_names": LIMIT_NAMES,
        "limit_labels": LIMIT_LABELS,
    }
    return render(request, "_keys.html" if is_fragment(request) else "keys.html", context)


ROUTES = [keys_page]
