"""The fake upstream: all four LLM protocols plus a control API, on one port.

    python -m tests.fakes.upstream --port 0 --port-file PATH [--api-key K] [--models a,b]

Endpoints: see README of tests/fakes (the module docstrings of each protocol module).
Control API (never logged, never scripted):
    POST /_control/next      JSON list of behaviours for the next matching requests
    GET  /_control/requests  the request log
    POST /_control/reset     clear log and script
    GET  /_control/health    {"ok": true}
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .anthropic import Anthropic
from .bootstrap import arg_parser, run_program, serve_until_signalled
from .control import RequestLog, Script, ScriptError
from .gemini import Gemini
from .http import Connection, PeerGone, Request, start_server
from .openai_chat import OpenAIChat
from .openai_responses import OpenAIResponses
from .replies import InvalidRequest, make_reply, short_hash
from .wire import Context, Event, Framing, JsonArray, Wire, default_message, dumps

DEFAULT_MODELS = [
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-5",
    "claude-sonnet-4-6",
    "claude-haiku-4-5",
    "gemini-2.5-flash",
    "gemini-2.5-pro",
    "gemini-3-pro-preview",
]
GEMINI_PATH = re.compile(r"^/(v1beta|v1|v1alpha)/models/([^/:]+):([A-Za-z]+)$")
CODE_ASSIST_PATH = re.compile(r"^/v1internal:([A-Za-z]+)$")
JSON_TYPE = "application/json; charset=utf-8"
SSE_TYPE = "text/event-stream; charset=utf-8"
# scripted ways to break a non-stream 200 (FakeUpstream.send_broken_answer)
BROKEN_ANSWERS = {
    "malformed_json",
    "malformed_sse",
    "cut_chunked",
    "stall_after",
    "cut_after",
    "reset_after",
}
DEFAULT_STALL = 60.0

CHAT, RESPONSES, ANTHROPIC, GEMINI = OpenAIChat(), OpenAIResponses(), Anthropic(), Gemini()


@dataclass
class Route:
    wire: Wire
    op: str  # generate | count | models | load_code_assist | onboard_user
    model: str | None = None
    stream: bool | None = None  # known from the path (Gemini)
    code_assist: bool = False


def resolve(request: Request) -> Route | None:
    path, method = request.path.rstrip("/") or "/", request.method
    if method == "POST":
        if path == "/v1/chat/completions":
            return Route(CHAT, "generate")
        if path == "/v1/responses":
            return Route(RESPONSES, "generate")
        if path == "/v1/messages":
            return Route(ANTHROPIC, "generate")
        if path == "/v1/messages/count_tokens":
            return Route(ANTHROPIC, "count")
        if m := GEMINI_PATH.match(path):
            model, verb = m.group(2), m.group(3)
            if verb in ("generateContent", "streamGenerateContent"):
                return Route(GEMINI, "generate", model, verb == "streamGenerateContent")
            if verb == "countTokens":
                return Route(GEMINI, "count", model)
        if path == "/token":
            return Route(GEMINI, "oauth_token")
        if m := CODE_ASSIST_PATH.match(path):
            verb = m.group(1)
            if verb in ("generateContent", "streamGenerateContent"):
                return Route(GEMINI, "generate", None, verb == "streamGenerateContent", True)
            ops = {
                "countTokens": "count",
                "loadCodeAssist": "load_code_assist",
                "onboardUser": "onboard_user",
            }
            if verb in ops:
                return Route(GEMINI, ops[verb], None, False, True)
    if method == "GET" and path in ("/v1/models", "/v1beta/models"):
        h = request.headers
        if path == "/v1beta/models" or "x-goog-api-key" in h or "key" in request.query:
            return Route(GEMINI, "models")
        if "anthropic-version" in h or "x-api-key" in h:
            return Route(ANTHROPIC, "models")
        return Route(CHAT, "models")
    return None


def guess_wire(request: Request) -> Wire:
    """The protocol whose error shape fits an unknown path best."""
    if request.path.startswith(("/v1beta", "/v1internal")) or ":" in request.path:
        return GEMINI
    if "anthropic-version" in request.headers:
        return ANTHROPIC
    return CHAT


class FakeUpstream:
    def __init__(self, api_key: str | None = None, models: list[str] | None = None) -> None:
        self.api_key = api_key
        self.models = models or DEFAULT_MODELS
        self.log = RequestLog()
        self.script = Script()

    # ---- entry point -----------------------------------------------------------------
    async def handle(self, request: Request, conn: Connection) -> None:
        if request.path.startswith("/_control/"):
            await self.control(request, conn)
            return
        entry = self.log.add(request)
        try:
            await self.serve(request, conn, entry)
        except PeerGone:
            entry["disconnected"] = True
            raise
        finally:
            if conn.peer_closed.is_set() and not entry["completed"]:
                entry["disconnected"] = True

    async def control(self, request: Request, conn: Connection) -> None:
        path = request.path
        if path == "/_control/next" and request.method == "POST":
            try:
                queued = self.script.add(request.json())
            except (ScriptError, ValueError) as exc:
                await conn.send_json(400, {"error": str(exc)})
                return
            await conn.send_json(200, {"queued": queued})
        elif path == "/_control/requests":
            await conn.send_json(200, self.log.entries)
        elif path == "/_control/reset" and request.method == "POST":
            self.log.clear()
            self.script.clear()
            await conn.send_json(200, {"ok": True})
        elif path == "/_control/script":
            await conn.send_json(200, self.script.queue)
        elif path == "/_control/health":
            await conn.send_json(200, {"ok": True, "pid": os.getpid()})
        else:
            await conn.send_json(404, {"error": f"no control endpoint {path}"})

    # ---- one request -----------------------------------------------------------------
    async def serve(self, request: Request, conn: Connection, entry: dict[str, Any]) -> None:
        route = resolve(request)
        body = entry["body"] if isinstance(entry["body"], dict) else {}
        wire = route.wire if route else guess_wire(request)
        model = (route.model if route else None) or str(body.get("model") or "")
        model = model.removeprefix("models/")
        stream = (
            bool(route.stream) if route and route.stream is not None else bool(body.get("stream"))
        )
        entry.update(protocol=wire.name, model=model, stream=stream)
        behaviour = self.script.take(request.path, wire.name, model, stream)
        entry["behaviour"] = behaviour

        if behaviour.get("hang") and not await conn.sleep(float(behaviour["hang"])):
            entry["disconnected"] = True
            conn.close()
            return
        if behaviour.get("reset"):
            entry["reset"] = True
            conn.reset()
            return
        headers = {k.lower(): str(v) for k, v in (behaviour.get("headers") or {}).items()}
        headers.setdefault("x-request-id", f"req_{short_hash(request.body, entry['id'])}")
        if wire is ANTHROPIC:
            headers.setdefault("request-id", headers["x-request-id"])
        if "retry_after" in behaviour:
            headers["retry-after"] = str(behaviour["retry_after"])
        if "body" in behaviour or behaviour.get("status", 200) != 200:
            await self.send_scripted(conn, entry, wire, behaviour, headers)
            return
        if behaviour.get("sse") is not None:
            await self.send_raw_sse(conn, entry, behaviour, headers)
            return
        if route is None:
            await self.reply(
                conn, entry, 404, wire.error_body(404, f"Unknown path {request.path}"), headers
            )
            return
        if route.op == "oauth_token":
            status, payload = self.oauth_token(entry["body"])
            await self.reply(conn, entry, status, payload, headers)
            return
        if not wire.authenticate(request, self.api_key):
            await self.reply(conn, entry, 401, wire.error_body(401, default_message(401)), headers)
            return
        if route.op == "models":
            await self.reply(conn, entry, 200, self.model_list(wire), headers)
            return
        if route.op == "load_code_assist":
            await self.reply(conn, entry, 200, load_code_assist(), headers)
            return
        if route.op == "onboard_user":
            await self.reply(conn, entry, 200, onboard_user(), headers)
            return
        if entry["body"] is None or not isinstance(entry["body"], dict):
            message = "We could not parse the JSON body of your request."
            await self.reply(conn, entry, 400, wire.error_body(400, message), headers)
            return
        ctx = Context(
            request=request,
            body=body,
            model=model,
            seed=short_hash(request.body),
            stream=stream,
            options={"sse": request.query.get("alt") == "sse", "code_assist": route.code_assist},
        )
        try:
            if route.op == "count":
                await self.reply(conn, entry, 200, self.count(wire, ctx), headers)
                return
            conv = wire.parse(ctx)
        except InvalidRequest as exc:
            error = wire.error_body(exc.status, exc.message, exc.param)
            await self.reply(conn, entry, exc.status, error, headers)
            return
        reply = make_reply(conv, wire.call_prefix, behaviour)
        if wire.is_stream(ctx):
            await self.send_stream(
                conn, entry, wire, ctx, wire.stream(reply, conv, ctx), behaviour, headers
            )
        else:
            payload = wire.render(reply, conv, ctx)
            if broken_answer(behaviour):
                entry["status"] = 200
                await self.send_broken_answer(
                    conn, entry, dumps(payload).encode(), behaviour, headers
                )
                return
            await self.reply(conn, entry, 200, payload, headers)

    def oauth_token(self, form: Any) -> tuple[int, dict[str, Any]]:
        """Google's OAuth token endpoint (refresh_token grant), for Code Assist adapters."""
        form = form if isinstance(form, dict) else {}
        if form.get("grant_type") != "refresh_token":
            grant = form.get("grant_type", "")
            return 400, {
                "error": "unsupported_grant_type",
                "error_description": f"Invalid grant_type: {grant}",
            }
        if not form.get("refresh_token"):
            return 400, {
                "error": "invalid_request",
                "error_description": "Missing required parameter: refresh_token",
            }
        return 200, {
            "access_token": self.api_key or "fake-access-token",
            "expires_in": 3599,
            "scope": "https://www.googleapis.com/auth/cloud-platform",
            "token_type": "Bearer",
        }

    def count(self, wire: Wire, ctx: Context) -> dict[str, Any]:
        if isinstance(wire, Gemini):
            return wire.count_tokens(ctx)
        assert isinstance(wire, Anthropic)
        return {"input_tokens": wire.parse(ctx, count_only=True).input_tokens}

    def model_list(self, wire: Wire) -> dict[str, Any]:
        if wire is GEMINI:
            return {
                "models": [
                    {
                        "name": f"models/{m}",
                        "version": "001",
                        "displayName": m,
                        "description": f"Fake {m}",
                        "inputTokenLimit": 1048576,
                        "outputTokenLimit": 65536,
                        "supportedGenerationMethods": [
                            "generateContent",
                            "streamGenerateContent",
                            "countTokens",
                        ],
                    }
                    for m in self.models
                ]
            }
        if wire is ANTHROPIC:
            data = [
                {
                    "type": "model",
                    "id": m,
                    "display_name": m,
                    "created_at": "2025-01-01T00:00:00Z",
                }
                for m in self.models
            ]
            return {
                "data": data,
                "has_more": False,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        return {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": 1700000000, "owned_by": "fake-upstream"}
                for m in self.models
            ],
        }

    # ---- writing ---------------------------------------------------------------------
    async def reply(
        self, conn: Connection, entry: dict, status: int, payload: Any, headers: dict[str, str]
    ) -> None:
        entry["status"] = status
        await conn.send_json(status, payload, headers)
        entry["completed"] = True

    async def send_scripted(
        self, conn: Connection, entry: dict, wire: Wire, behaviour: dict, headers: dict[str, str]
    ) -> None:
        status = int(behaviour.get("status", 200))
        if "body" in behaviour:
            body = behaviour["body"]
        else:
            body = wire.error_body(
                status, behaviour.get("error_message") or default_message(status)
            )
        entry["status"] = status
        if isinstance(body, str):
            ctype = behaviour.get("content_type", "text/plain; charset=utf-8")
            await conn.send(status, body.encode(), ctype, headers)
        else:
            await conn.send_json(status, body, headers)
        entry["completed"] = True

    async def send_broken_answer(
        self, conn: Connection, entry: dict, body: bytes, behaviour: dict, headers: dict[str, str]
    ) -> None:
        """A non-stream 200 broken the scripted way (BROKEN_ANSWERS)."""
        if behaviour.get("malformed_json"):
            await conn.send(200, broken_json(body), JSON_TYPE, headers)
        elif behaviour.get("malformed_sse"):
            await conn.send(200, b"data: " + body + b"\n\n", SSE_TYPE, headers)
        elif behaviour.get("cut_chunked") is not None:
            await conn.start_chunked(200, JSON_TYPE, headers)
            await conn.send_cut_chunk(body)
            return
        elif behaviour.get("stall_after") is not None:
            half = len(body) // 2
            await conn.start_body(200, len(body), JSON_TYPE, headers)
            await conn.send_raw(body[:half])
            if not await conn.sleep(float(behaviour.get("stall", DEFAULT_STALL))):
                entry["disconnected"] = True
                return
            await conn.send_raw(body[half:])
        else:  # cut_after / reset_after: half the announced body, then FIN or RST
            await conn.send_partial(200, body, JSON_TYPE, headers)
            if behaviour.get("reset_after") is not None:
                conn.reset()
            return
        entry["completed"] = True

    async def _write_chunk(self, conn: Connection, data: bytes, chunk_size: int | None) -> None:
        if not chunk_size:
            await conn.send_chunk(data)
            return
        for i in range(0, len(data), chunk_size):
            await conn.send_chunk(data[i : i + chunk_size])
            await asyncio.sleep(0.001)

    async def send_raw_sse(
        self, conn: Connection, entry: dict, behaviour: dict, headers: dict[str, str]
    ) -> None:
        entry["status"] = 200
        await conn.start_chunked(200, "text/event-stream; charset=utf-8", headers)
        delay = float(behaviour.get("delay_between_events") or 0)
        for i, item in enumerate(behaviour["sse"]):
            if i and delay and not await conn.sleep(delay):
                entry["disconnected"] = True
                return
            if isinstance(item, str):
                data = item.encode()
            else:
                head = f"event: {item['event']}\n" if item.get("event") else ""
                payload = item.get("data")
                text = payload if isinstance(payload, str) else dumps(payload)
                data = f"{head}data: {text}\n\n".encode()
            await self._write_chunk(conn, data, behaviour.get("chunk_size"))
            entry["events_sent"] = i + 1
        await conn.end_chunked()
        entry["completed"] = True

    async def send_stream(
        self,
        conn: Connection,
        entry: dict,
        wire: Wire,
        ctx: Context,
        events: list[Event],
        behaviour: dict,
        headers: dict[str, str],
    ) -> None:
        framing = wire.framing(ctx)
        chunk_size = behaviour.get("chunk_size")
        delay = float(behaviour.get("delay_between_events") or 0)
        error_status = int(behaviour.get("error_status", 500))
        error_message = behaviour.get("error_message") or default_message(error_status)
        entry["status"] = 200
        await conn.start_chunked(200, framing.content_type, headers)
        await self._write_chunk(conn, framing.start(), chunk_size)
        first_delay = float(behaviour.get("first_event_delay") or 0)
        if first_delay and not await conn.sleep(first_delay):
            entry["disconnected"] = True
            return

        async def error_and_end(index: int) -> None:
            event = wire.stream_error(error_status, error_message, index)
            await self._write_chunk(conn, framing.event(event, index), chunk_size)
            if isinstance(framing, JsonArray):
                await self._write_chunk(conn, framing.end(), chunk_size)
            await conn.end_chunked()
            entry["completed"] = True

        if behaviour.get("stream_error") == "failed" and isinstance(wire, OpenAIResponses):
            events = wire.failed_events(ctx, error_status, error_message)
        elif behaviour.get("stream_error"):
            await error_and_end(0)
            return
        cut = behaviour.get("cut_after")
        rst = behaviour.get("reset_after")
        err = behaviour.get("error_after")
        cut_chunked = behaviour.get("cut_chunked")
        stall_at = behaviour.get("stall_after")
        encode = event_encoder(framing, behaviour)
        if behaviour.get("no_final"):
            events = events[:-1]
        for i, event in enumerate(events):
            if cut is not None and i >= int(cut):
                conn.close()
                return
            if rst is not None and i >= int(rst):
                conn.reset()
                return
            if err is not None and i >= int(err):
                await error_and_end(i)
                return
            if cut_chunked is not None and i >= int(cut_chunked):
                await conn.send_cut_chunk(encode(event, i))
                return
            pause = delay if i else 0.0
            if stall_at is not None and i == int(stall_at):
                pause = float(behaviour.get("stall", DEFAULT_STALL))
            if pause and not await conn.sleep(pause):
                entry["disconnected"] = True
                return
            await self._write_chunk(conn, encode(event, i), chunk_size)
            entry["events_sent"] = i + 1
        if cut is not None:
            conn.close()
            return
        if rst is not None:
            conn.reset()
            return
        if not behaviour.get("no_final") or isinstance(framing, JsonArray):
            await self._write_chunk(conn, framing.end(), chunk_size)
        await conn.end_chunked()
        entry["completed"] = True


def broken_answer(behaviour: dict) -> bool:
    """Whether a non-stream 200 is scripted to break (a count of 0 counts; False not)."""
    return any(
        behaviour.get(key) is not None and behaviour.get(key) is not False for key in BROKEN_ANSWERS
    )


def broken_json(data: bytes) -> bytes:
    """`data` without the last closing brace of its JSON: no longer JSON."""
    end = data.rfind(b"}")
    return data[:end] + data[end + 1 :] if end >= 0 else data + b"{"


def not_sse(data: Any) -> bytes:
    """One event's data without the `data:` field name, then a line that is not UTF-8."""
    return dumps(data).encode() + b"\n\xff\xfe\x80 not utf-8\n\n"


def event_encoder(framing: Framing, behaviour: dict) -> Callable[[Event, int], bytes]:
    """How each stream event goes on the wire: the framing's way, or broken as scripted."""
    if behaviour.get("malformed_json"):
        return lambda event, i: broken_json(framing.event(event, i))
    if behaviour.get("malformed_sse"):
        return lambda event, i: not_sse(event.data)
    return framing.event


def load_code_assist() -> dict[str, Any]:
    return {
        "currentTier": {"id": "standard-tier", "name": "Gemini Code Assist"},
        "allowedTiers": [{"id": "standard-tier", "isDefault": True}],
        "cloudaicompanionProject": "fake-project",
    }


def onboard_user() -> dict[str, Any]:
    return {
        "name": "operations/fake-onboard",
        "done": True,
        "response": {
            "@type": "type.googleapis.com/google.internal.cloud.code.v1internal."
            "OnboardUserResponse",
            "cloudaicompanionProject": {"id": "fake-project", "name": "fake-project"},
        },
    }


async def run(args: argparse.Namespace) -> None:
    models = [m for m in (args.models or "").split(",") if m] or None
    app = FakeUpstream(api_key=args.api_key, models=models)
    tls = None
    if args.tls_cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    server = await start_server(app.handle, args.host, args.port, tls)
    await serve_until_signalled(server, "fake upstream", args)


def main(argv: list[str] | None = None) -> None:
    parser = arg_parser(__doc__.splitlines()[0])
    parser.add_argument("--api-key", help="require this key (each protocol's own header)")
    parser.add_argument("--models", help="comma-separated model ids for the model lists")
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate chain (PEM)")
    parser.add_argument("--tls-key", help="the certificate's private key (PEM)")
    run_program(run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
