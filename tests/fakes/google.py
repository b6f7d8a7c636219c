"""A loopback fake of Google's OAuth endpoints and of the Code Assist API (`v1internal`),
for the gemini-cli-oauth and gemini-antigravity adapters. Standard library only, and
independent of the `router` package.

    python -m tests.fakes.google --port 0 --port-file PATH [--client-id ID] [--client-secret S]

OAuth:
    GET  /o/oauth2/v2/auth   checks client_id, redirect_uri, response_type=code, S256 PKCE,
                             state, access_type=offline; 302 to redirect_uri?code&state&scope
    POST /token              authorization_code (code single-use, redirect_uri and
                             code_verifier checked) and refresh_token grants; client
                             credentials in the form or Basic auth; Google's error shapes
Code Assist, optionally under one path prefix (`/daily/v1internal:...`) so one fake can
stand for several base URLs:
    POST /v1internal:loadCodeAssist      per `mode`: "project" (has cloudaicompanionProject),
                                         "onboard" (free tier to onboard), "tier" (a tier
                                         but no project)
    POST /v1internal:onboardUser         a long-running operation: `onboard_polls` answers
                                         with done=false, then done with the project
    POST /v1internal:generateContent     `{"response": {...}, "traceId": ...}`
    POST /v1internal:countTokens         `{request: {model: "models/...", contents}}` ->
                                         `{"totalTokens": n}`
    POST /v1internal:streamGenerateContent?alt=sse
                                         `data: {"response": {...}, "traceId": ...}` CRLF
                                         events, each written in two pieces
Every Code Assist call needs `Authorization: Bearer <a live access token>` (else 401).
The envelope is checked: `{model, project, request}` (+ `user_prompt_id`), and for
Antigravity (`userAgent` set) `requestId` and `request.sessionId`, and tool schemas
without keywords outside type/description/properties/required/items/enum.

Control (never logged):
    GET  /_control/log       the request log (method, path, prefix, query, headers, body)
    GET  /_control/stats     counters: exchanges, refreshes, load, onboard, generate, count
    POST /_control/config    merge settings: mode, onboard_polls, project, expires_in,
                             token_delay, reply
    POST /_control/script    queue [{"match": "substring of the path", "status": 429,
                             "body": {...}, "times": 1}] answered before anything else
    POST /_control/revoke    every access token issued so far stops working
    POST /_control/reset     log, counters, script and config back to the start
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from .bootstrap import arg_parser, run_program, serve_until_signalled
from .http import Connection, PeerGone, Request, start_server

CODE_ASSIST_PATH = re.compile(r"^(/[A-Za-z0-9_-]+)?/v1internal:([A-Za-z]+)$")
ENVELOPE_KEYS = {
    "model",
    "project",
    "request",
    "user_prompt_id",
    "userAgent",
    "requestId",
    "requestType",
}
REQUEST_KEYS = {
    "contents",
    "systemInstruction",
    "tools",
    "toolConfig",
    "generationConfig",
    "safetySettings",
    "cachedContent",
    "labels",
    "session_id",
    "sessionId",
}
COUNT_KEYS = {"model", "contents"}
PORTABLE_SCHEMA_KEYS = {"type", "description", "properties", "required", "items", "enum"}
STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
DEFAULT_CONFIG: dict[str, Any] = {
    "mode": "project",
    "onboard_polls": 2,
    "project": "fake-project-123",
    "expires_in": 3599,
    "token_delay": 0.0,
    "reply": None,
}


def google_error(status: int, message: str) -> dict[str, Any]:
    return {
        "error": {"code": status, "message": message, "status": STATUSES.get(status, "UNKNOWN")}
    }


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class FakeGoogle:
    def __init__(self, client_id: str, client_secret: str) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.counter = itertools.count(1)
        self.reset()

    def reset(self) -> None:
        self.config = dict(DEFAULT_CONFIG)
        self.log: list[dict[str, Any]] = []
        self.stats = {
            "exchanges": 0,
            "refreshes": 0,
            "load": 0,
            "onboard": 0,
            "generate": 0,
            "count": 0,
        }
        self.script: list[dict[str, Any]] = []
        self.codes: dict[str, dict[str, Any]] = {}
        self.refresh_tokens: set[str] = set()
        self.access_tokens: dict[str, float] = {}  # token -> expiry (epoch seconds)
        self.onboarded = False

    # ---- dispatch ---------------------------------------------------------------------
    async def handle(self, request: Request, conn: Connection) -> None:
        if request.path.startswith("/_control/"):
            await self.control(request, conn)
            return
        self.log.append(self.log_entry(request))
        scripted = self.take_script(request.path)
        if scripted is not None:
            status = int(scripted.get("status", 500))
            body = scripted.get("body") or google_error(status, "scripted failure")
            await conn.send_json(status, body)
            return
        if request.method == "GET" and request.path == "/o/oauth2/v2/auth":
            await self.authorize(request, conn)
        elif request.method == "POST" and request.path == "/token":
            status, payload = await self.token(request)
            await conn.send_json(status, payload, {"cache-control": "no-store"})
        elif request.method == "POST" and (m := CODE_ASSIST_PATH.match(request.path)):
            await self.code_assist(request, conn, m.group(2))
        else:
            await conn.send_json(404, google_error(404, f"Unknown path {request.path}"))

    def log_entry(self, request: Request) -> dict[str, Any]:
        m = CODE_ASSIST_PATH.match(request.path)
        try:
            body: Any = json.loads(request.body) if request.body else None
        except ValueError:
            body = request.body.decode("utf-8", "replace")
        return {
            "method": request.method,
            "path": request.path,
            "prefix": (m.group(1) or "") if m else None,
            "query": request.query,
            "headers": request.headers,
            "body": body,
            "time": time.time(),
        }

    def take_script(self, path: str) -> dict[str, Any] | None:
        for item in self.script:
            if item.get("match", "") in path:
                item["times"] = item.get("times", 1) - 1
                if item["times"] <= 0:
                    self.script.remove(item)
                return item
        return None

    async def control(self, request: Request, conn: Connection) -> None:
        path, method = request.path, request.method
        if path == "/_control/log":
            await conn.send_json(200, self.log)
        elif path == "/_control/stats":
            await conn.send_json(200, self.stats)
        elif path == "/_control/health":
            await conn.send_json(200, {"ok": True})
        elif path == "/_control/config" and method == "POST":
            self.config.update(request.json() or {})
            await conn.send_json(200, self.config)
        elif path == "/_control/script" and method == "POST":
            items = request.json()
            self.script.extend(items if isinstance(items, list) else [items])
            await conn.send_json(200, {"queued": len(self.script)})
        elif path == "/_control/revoke" and method == "POST":
            self.access_tokens.clear()
            await conn.send_json(200, {"revoked": True})
        elif path == "/_control/reset" and method == "POST":
            self.reset()
            await conn.send_json(200, {"reset": True})
        else:
            await conn.send_json(404, {"error": f"unknown control path {path}"})

    # ---- OAuth ------------------------------------------------------------------------
    async def authorize(self, request: Request, conn: Connection) -> None:
        q = request.query
        problems = [
            name
            for name, ok in (
                ("client_id", q.get("client_id") == self.client_id),
                ("response_type", q.get("response_type") == "code"),
                ("redirect_uri", q.get("redirect_uri", "").startswith("http")),
                ("code_challenge_method", q.get("code_challenge_method") == "S256"),
                ("code_challenge", len(q.get("code_challenge", "")) >= 43),
                ("state", bool(q.get("state"))),
                ("access_type", q.get("access_type") == "offline"),
                (
                    "scope",
                    "https://www.googleapis.com/auth/cloud-platform" in q.get("scope", "").split(),
                ),
            )
            if not ok
        ]
        if problems:
            body = f"Error 400: invalid_request ({', '.join(problems)})".encode()
            await conn.send(400, body, "text/plain")
            return
        code = f"4/fake-code-{next(self.counter)}"
        self.codes[code] = {
            "redirect_uri": q["redirect_uri"],
            "challenge": q["code_challenge"],
            "scope": q["scope"],
        }
        query = urlencode({"state": q["state"], "code": code, "scope": q["scope"]})
        await conn.send(302, b"", "text/html", {"location": f"{q['redirect_uri']}?{query}"})

    async def token(self, request: Request) -> tuple[int, dict[str, Any]]:
        form = dict(parse_qsl(request.body.decode()))
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            decoded = base64.b64decode(auth[6:]).decode()
            client_id, _, client_secret = decoded.partition(":")
        if (client_id, client_secret) != (self.client_id, self.client_secret):
            return 401, {"error": "invalid_client", "error_description": "Unauthorized"}
        grant = form.get("grant_type")
        if grant == "authorization_code":
            return self.exchange(form)
        if grant == "refresh_token":
            return await self.refresh(form)
        return 400, {
            "error": "unsupported_grant_type",
            "error_description": f"Invalid grant_type: {grant}",
        }

    def exchange(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        issued = self.codes.pop(form.get("code", ""), None)
        if issued is None:
            return 400, {"error": "invalid_grant", "error_description": "Malformed auth code."}
        if form.get("redirect_uri") != issued["redirect_uri"]:
            return 400, {"error": "redirect_uri_mismatch", "error_description": "Bad Request"}
        if s256(form.get("code_verifier", "")) != issued["challenge"]:
            return 400, {"error": "invalid_grant", "error_description": "Invalid code verifier."}
        self.stats["exchanges"] += 1
        refresh = f"1//fake-refresh-{next(self.counter)}"
        self.refresh_tokens.add(refresh)
        return 200, {
            **self.new_access_token(),
            "refresh_token": refresh,
            "scope": issued["scope"],
            "id_token": "fake.id.token",
        }

    async def refresh(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if form.get("refresh_token") not in self.refresh_tokens:
            return 400, {
                "error": "invalid_grant",
                "error_description": "Token has been expired or revoked.",
            }
        self.stats["refreshes"] += 1
        if self.config["token_delay"]:
            await asyncio.sleep(float(self.config["token_delay"]))
        return 200, {
            **self.new_access_token(),
            "scope": "https://www.googleapis.com/auth/cloud-platform",
        }

    def new_access_token(self) -> dict[str, Any]:
        token = f"ya29.fake-access-{next(self.counter)}"
        expires_in = int(self.config["expires_in"])
        self.access_tokens[token] = time.time() + expires_in
        return {"access_token": token, "expires_in": expires_in, "token_type": "Bearer"}

    # ---- Code Assist ------------------------------------------------------------------
    def authenticated(self, request: Request) -> bool:
        auth = request.headers.get("authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else ""
        return self.access_tokens.get(token, 0) > time.time()

    async def code_assist(self, request: Request, conn: Connection, method: str) -> None:
        if not self.authenticated(request):
            message = (
                "Request had invalid authentication credentials. Expected OAuth 2 access "
                "token, login cookie or other valid authentication credential."
            )
            await conn.send_json(401, google_error(401, message))
            return
        try:
            body = request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            await conn.send_json(400, google_error(400, "Invalid JSON payload received."))
            return
        if method == "loadCodeAssist":
            self.stats["load"] += 1
            await conn.send_json(200, self.load_code_assist())
        elif method == "onboardUser":
            await conn.send_json(*self.onboard_user(body))
        elif method in ("generateContent", "streamGenerateContent"):
            problem = self.check_envelope(body)
            if problem:
                await conn.send_json(400, google_error(400, problem))
                return
            self.stats["generate"] += 1
            if method == "generateContent":
                await conn.send_json(200, self.wrap(self.answer(body, final=True)))
            elif request.query.get("alt") == "sse":
                await self.stream_sse(conn, body)
            else:
                await conn.send_json(200, [self.wrap(c) for c in self.chunks(body)])
        elif method == "countTokens":
            await conn.send_json(*self.count_tokens(body))
        else:
            await conn.send_json(404, google_error(404, f"Method not found: {method}"))

    def count_tokens(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """`{request: {model: "models/<m>", contents}}`, as gemini-cli sends it, answered
        with `totalTokens`: 1 per 4 characters of each text, call and response, 258 per
        inline blob. `thought` parts are rejected (gemini-cli rewrites them first)."""
        request = body.get("request")
        unknown = sorted(set(body) - {"request"}) or sorted(set(request or {}) - COUNT_KEYS)
        if unknown or not isinstance(request, dict):
            name = unknown[0] if unknown else "request"
            return 400, google_error(
                400, f'Invalid JSON payload received. Unknown name "{name}": Cannot find field.'
            )
        model = request.get("model")
        if not isinstance(model, str) or not model.startswith("models/"):
            return 400, google_error(400, "CountTokensRequest.model: unexpected model name format")
        self.stats["count"] += 1
        total = 0
        for content in request.get("contents") or []:
            for part in content.get("parts") or []:
                if "thought" in part:
                    return 400, google_error(400, "Invalid JSON payload: unexpected thought part")
                if "inlineData" in part:
                    total += 258
                for key in ("text", "functionCall", "functionResponse"):
                    if key in part:
                        value = part[key] if key == "text" else json.dumps(part[key])
                        total += -(-len(value) // 4)
        return 200, {"totalTokens": total}

    def load_code_assist(self) -> dict[str, Any]:
        free = {"id": "free-tier", "name": "Gemini Code Assist for individuals", "isDefault": True}
        mode = self.config["mode"]
        if mode == "project" or (mode == "onboard" and self.onboarded):
            return {
                "currentTier": free,
                "allowedTiers": [free],
                "cloudaicompanionProject": self.config["project"],
            }
        if mode == "tier":
            return {"currentTier": {"id": "standard-tier"}, "allowedTiers": [free]}
        return {"allowedTiers": [free, {"id": "legacy-tier", "name": "Legacy"}]}

    def onboard_user(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if not body.get("tierId"):
            return 400, google_error(400, "tierId is required")
        self.stats["onboard"] += 1
        operation: dict[str, Any] = {"name": "operations/fake-onboard-1", "done": False}
        if self.stats["onboard"] > int(self.config["onboard_polls"]):
            self.onboarded = True
            project = self.config["project"]
            operation["done"] = True
            operation["response"] = {
                "@type": "type.googleapis.com/google.internal.cloud.code.v1internal."
                "OnboardUserResponse",
                "cloudaicompanionProject": {"id": project, "name": project},
            }
        return 200, operation

    def check_envelope(self, body: dict[str, Any]) -> str | None:
        unknown = sorted(set(body) - ENVELOPE_KEYS)
        if unknown:
            return f'Invalid JSON payload received. Unknown name "{unknown[0]}": Cannot find field.'
        request = body.get("request")
        if not isinstance(body.get("model"), str) or not isinstance(request, dict):
            return "Invalid JSON payload received. Missing 'model' or 'request'."
        if body.get("project") != self.config["project"]:
            return f"Permission denied on project {body.get('project')!r}"
        unknown = sorted(set(request) - REQUEST_KEYS)
        if unknown:
            return f"Invalid JSON payload received. Unknown name \"{unknown[0]}\" at 'request'."
        if not isinstance(request.get("contents"), list) or not request["contents"]:
            return "* GenerateContentRequest.contents: contents is not specified"
        if "userAgent" in body:
            if not isinstance(body.get("requestId"), str) or not isinstance(
                request.get("sessionId"), str
            ):
                return "Antigravity envelope needs requestId and request.sessionId"
            for name in schema_keywords(request.get("tools") or []):
                if name not in PORTABLE_SCHEMA_KEYS:
                    return f'Invalid JSON payload received. Unknown name "{name}" at tool schema.'
        return None

    # ---- replies ----------------------------------------------------------------------
    def reply_text(self, body: dict[str, Any]) -> str:
        if self.config["reply"]:
            return str(self.config["reply"])
        last = ""
        for content in body["request"]["contents"]:
            for part in content.get("parts") or []:
                if content.get("role", "user") == "user" and isinstance(part.get("text"), str):
                    last = part["text"]
        return f"echo: {last}"

    def answer(
        self,
        body: dict[str, Any],
        text: str | None = None,
        final: bool = False,
    ) -> dict[str, Any]:
        text = self.reply_text(body) if text is None else text
        candidate: dict[str, Any] = {
            "content": {"role": "model", "parts": [{"text": text}]},
            "index": 0,
        }
        if final:
            candidate["finishReason"] = "STOP"
        words = len(self.reply_text(body).split())
        return {
            "candidates": [candidate],
            "usageMetadata": {
                "promptTokenCount": 7,
                "candidatesTokenCount": words,
                "totalTokenCount": 7 + words,
            },
            "modelVersion": body["model"],
            "createTime": "2025-01-01T00:00:00.000000Z",
            "responseId": f"fake-response-{next(self.counter)}",
        }

    def chunks(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        words = self.reply_text(body).split(" ")
        for index, word in enumerate(words):
            last = index == len(words) - 1
            yield self.answer(body, word if last else word + " ", final=last)

    def wrap(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {"response": payload, "traceId": f"fake-trace-{next(self.counter):04d}"}

    async def stream_sse(self, conn: Connection, body: dict[str, Any]) -> None:
        await conn.start_chunked(200, "text/event-stream")
        for chunk in self.chunks(body):
            event = b"data: " + json.dumps(self.wrap(chunk)).encode() + b"\r\n\r\n"
            middle = len(event) // 2
            for piece in (event[:middle], event[middle:]):  # awkward chunking on purpose
                await conn.send_chunk(piece)
                await asyncio.sleep(0.001)
        await conn.end_chunked()


def schema_keywords(tools: list[Any]) -> Iterator[str]:
    """Every keyword used in the function declarations' schemas (property names excluded)."""

    def walk(node: Any) -> Iterator[str]:
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            yield key
            if key == "properties" and isinstance(value, dict):
                for sub in value.values():
                    yield from walk(sub)
            elif key == "items":
                yield from walk(value)
            elif key == "anyOf" and isinstance(value, list):
                for sub in value:
                    yield from walk(sub)

    for tool in tools:
        for declaration in (tool or {}).get("functionDeclarations") or []:
            for key in ("parameters", "parametersJsonSchema"):
                yield from walk(declaration.get(key))


# ---- the program --------------------------------------------------------------------


async def run(args: argparse.Namespace) -> None:
    app = FakeGoogle(args.client_id, args.client_secret)

    async def handle(request: Request, conn: Connection) -> None:
        with contextlib.suppress(PeerGone):
            await app.handle(request, conn)

    server = await start_server(handle, args.host, args.port)
    await serve_until_signalled(server, "fake google", args)


def main(argv: list[str] | None = None) -> None:
    parser = arg_parser((__doc__ or "").splitlines()[0])
    parser.add_argument("--client-id", default="fake-client-id.apps.googleusercontent.com")
    parser.add_argument("--client-secret", default="fake-client-secret")
    run_program(run(parser.parse_args(argv)))


# ---- the test-side client -----------------------------------------------------------


class FakeGoogleProcess:
    """A running `python -m tests.fakes.google`, with its control API."""

    CLIENT_ID = "fake-client-id.apps.googleusercontent.com"
    CLIENT_SECRET = "fake-client-secret"

    def __init__(self, proc: Any) -> None:
        self.proc = proc
        self.url: str = proc.url
        self.port: int = proc.port

    @classmethod
    def start(cls, timeout: float = 10.0) -> FakeGoogleProcess:
        from .process import start_python_module

        extra = ["--client-id", cls.CLIENT_ID, "--client-secret", cls.CLIENT_SECRET]
        return cls(start_python_module("tests.fakes.google", extra, "fake-google", timeout))

    @property
    def auth_url(self) -> str:
        return self.url + "/o/oauth2/v2/auth"

    @property
    def token_url(self) -> str:
        return self.url + "/token"

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"content-type": "application/json"}
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=5.0) as response:
            return json.loads(response.read() or b"null")

    def log(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/_control/log"))

    def calls(self, method: str) -> list[dict[str, Any]]:
        """Logged Code Assist calls of one method (e.g. "generateContent")."""
        return [e for e in self.log() if e["path"].endswith(f"/v1internal:{method}")]

    def stats(self) -> dict[str, int]:
        return dict(self._call("GET", "/_control/stats"))

    def configure(self, **settings: Any) -> dict[str, Any]:
        return dict(self._call("POST", "/_control/config", settings))

    def script(self, *items: dict[str, Any]) -> None:
        self._call("POST", "/_control/script", list(items))

    def revoke(self) -> None:
        self._call("POST", "/_control/revoke", {})

    def reset(self) -> None:
        self._call("POST", "/_control/reset", {})

    def sign_in(self) -> dict[str, Any]:
        """Tokens for a fresh account without the browser step (code exchange done by the
        fake's own endpoints): authorize with a known verifier, then exchange."""
        verifier = "v" * 64
        query = urlencode(
            {
                "client_id": self.CLIENT_ID,
                "response_type": "code",
                "state": "s",
                "redirect_uri": "http://localhost/cb",
                "code_challenge": s256(verifier),
                "code_challenge_method": "S256",
                "access_type": "offline",
                "scope": "https://www.googleapis.com/auth/cloud-platform",
            }
        )

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: Any, **kwargs: Any) -> None:
                return None

        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirect())
        try:
            opener.open(f"{self.auth_url}?{query}", timeout=5.0)
            raise AssertionError("the fake authorize endpoint did not redirect")
        except urllib.error.HTTPError as redirect:
            location = redirect.headers["location"]
        code = dict(parse_qsl(urlsplit(location).query))["code"]
        form = urlencode(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": "http://localhost/cb",
                "code_verifier": verifier,
                "client_id": self.CLIENT_ID,
                "client_secret": self.CLIENT_SECRET,
            }
        )
        request = urllib.request.Request(self.token_url, data=form.encode(), method="POST")
        with opener.open(request, timeout=5.0) as response:
            return json.loads(response.read())

    def write_credentials(self, path: Path, *, expired: bool = False) -> dict[str, Any]:
        """Sign in and write gemini-cli's credentials file (optionally already expired)."""
        token = self.sign_in()
        expiry = time.time() + (-60 if expired else token["expires_in"])
        creds = {
            "access_token": token["access_token"],
            "refresh_token": token["refresh_token"],
            "token_type": "Bearer",
            "scope": token["scope"],
            "expiry_date": int(expiry * 1000),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(creds))
        path.chmod(0o600)
        return creds

    def stop(self) -> None:
        self.proc.stop()

    def __enter__(self) -> FakeGoogleProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    main()
