"""The config-writing rows of the management API, and the read-only (GitOps) mode.

- `GET /api/config`: the files as written, each literal secret `***` (secrets.mask_text,
  as the upload-configs view shows them; `${...}` references as written), the compiled
  dump, the generation and `read_only`;
- `POST /api/config` `{"files": {"routes.yaml": "...", ...}}`: replaces files' text;
- `PUT /api/providers/{pool}/{id}`: changes an instance's fields in providers.yaml,
  comments and key order kept (config_writes.edit_instance).

A write is checked first: the candidates go into a temporary copy of the config dir,
which is compiled as `router check` does; any error is a 400 with the diagnostics as
`file:line:col: message` and no file is touched. Then each file is replaced atomically
and every worker reloads. A masked value sent back (`***`, or `${KEY:-***}`) where the
file holds a literal secret keeps the file's value (secrets.restore_secrets); one that
stands for no secret of the file is a 400, never written.

`admin: { read_only: true }` in routes.yaml, or ROUTER_ADMIN_READ_ONLY=1, makes both
writes answer 409 `config is managed in git`."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
from litestar import Request, Response, get, post, put

from router.compiler import dump
from router.compiler.layout import PROVIDERS_FILE
from router.compiler.plan import Plan
from router.console.config_writes import (
    TESTS_FILE,
    allowed,
    check_candidates,
    config_files,
    edit_instance,
    read,
    write_atomically,
)
from router.console.secrets import MaskedValueError, mask_text, restore_secrets
from router.protocols import ir
from router.protocols.paths import DEFAULT_PROTOCOL
from router.server.errors import error_parts, error_response
from router.server.json_response import json_response
from router.server.management import admin_plan
from router.server.reload import request_reload
from router.server.state import PlanHolder

READ_ONLY_MESSAGE = "config is managed in git"

_write_lock = asyncio.Lock()  # one write at a time in this worker (WRITE_LOCK: in the server)
WRITE_LOCK = "config-write.lock"  # beside the state store's database


def _error(status: int, message: str, **extra: Any) -> Response:
    """An admin-API error (the default protocol's shape), with `extra` keys beside it."""
    error = ir.Error(status, ir.error_kind_for_status(status), message)
    if not extra:
        return error_response(DEFAULT_PROTOCOL, error)
    status, body, _headers = error_parts(DEFAULT_PROTOCOL, error)
    document = {**json.loads(body), **extra}
    return json_response(document, status)


def _check_then_write(lock: Path | None, config_dir: str, files: dict[str, str]) -> list[str]:
    """Check the files as they would be, then write them: the diagnostics, or none once
    written. Under a lock file in the state dir, so that no other worker of the server
    writes between this one's check and its write."""
    with contextlib.ExitStack() as stack:
        if lock is not None:
            handle = stack.enter_context(open(lock, "a"))
            fcntl.flock(handle, fcntl.LOCK_EX)
        errors = check_candidates(config_dir, files)
        if errors:
            return errors
        for name, text in files.items():
            write_atomically(Path(config_dir) / name, text)
    return []


def read_only(plan: Plan) -> bool:
    flag = os.environ.get("ROUTER_ADMIN_READ_ONLY", "").strip().lower()
    return plan.admin.read_only or flag in ("1", "true", "yes", "on")


async def _check_and_write(request: Request, files: dict[str, str]) -> Response:
    holder: PlanHolder = request.app.state.holder
    config_dir = holder.config_dir
    database = request.app.state.records.state_database
    lock = database.with_name(WRITE_LOCK) if database is not None else None
    async with _write_lock:
        errors = await asyncio.to_thread(_check_then_write, lock, config_dir, files)
        if errors:
            return _error(400, f"the config does not compile: {errors[0]}", diagnostics=errors)
        ok = await asyncio.to_thread(holder.reload)
        request_reload()  # the other workers follow through the shared trigger
    sync = request.app.state.sync
    if sync is not None:
        with contextlib.suppress(OSError, sqlite3.Error):
            await sync.record("config", {"written": sorted(files), "reloaded": ok})
    plan = holder.plan
    error = holder.last_error
    return json_response(
        {
            "written": sorted(files),
            "reloaded": ok,
            "generation": plan.generation if plan else None,
            "error": list(error.diagnostics) if error else None,
        }
    )


def _writable(request: Request) -> Plan | Response:
    try:
        plan = admin_plan(request)
    except ir.Error as error:
        return error_response(DEFAULT_PROTOCOL, error)
    if read_only(plan):
        return _error(409, READ_ONLY_MESSAGE)
    return plan


async def _body(request: Request) -> Any:
    try:
        return msgspec.json.decode(await request.body())
    except msgspec.DecodeError:
        return None


@get("/api/config")
async def get_config(request: Request) -> Response:
    try:
        plan = admin_plan(request)
    except ir.Error as error:
        return error_response(DEFAULT_PROTOCOL, error)
    config_dir = request.app.state.holder.config_dir
    files = {}
    for name in config_files(config_dir):
        text = read(config_dir, name)
        if text is not None:
            files[name] = mask_text(name, text)
    return json_response(
        {
            "files": files,
            "compiled": dump(plan),
            "generation": plan.generation,
            "read_only": read_only(plan),
        }
    )


@post("/api/config", status_code=200)
async def post_config(request: Request) -> Response:
    plan = _writable(request)
    if isinstance(plan, Response):
        return plan
    body = await _body(request)
    files = body.get("files") if isinstance(body, dict) else None
    if not isinstance(files, dict) or not files:
        return _error(400, 'expected {"files": {"routes.yaml": "...", ...}}')
    config_dir = request.app.state.holder.config_dir
    for name, text in files.items():
        if not allowed(config_dir, name):
            return _error(
                400,
                f"{name!r} is not a config file: providers.yaml, routes.yaml, "
                f"{TESTS_FILE} or pipelines/NAME.yaml",
            )
        if not isinstance(text, str):
            return _error(400, f"the text of {name} must be a string")
    candidates, problems = {}, []
    for name, text in files.items():
        try:
            candidates[name] = restore_secrets(name, read(config_dir, name), text)
        except MaskedValueError as masked:
            problems.append(str(masked))
    if problems:
        return _error(400, problems[0], diagnostics=problems)
    return await _check_and_write(request, candidates)


@put("/api/providers/{pool:str}/{instance_id:str}", status_code=200)
async def put_instance(request: Request, pool: str, instance_id: str) -> Response:
    plan = _writable(request)
    if isinstance(plan, Response):
        return plan
    fields = await _body(request)
    if not isinstance(fields, dict) or not fields:
        return _error(400, 'expected the fields to change, e.g. {"enabled": false}')
    config_dir = request.app.state.holder.config_dir
    original = read(config_dir, PROVIDERS_FILE)
    if original is None:
        return _error(404, f"no {PROVIDERS_FILE}")
    try:
        text = edit_instance(original, pool, instance_id, fields)
    except LookupError as missing:
        return _error(404, str(missing.args[0]))
    except MaskedValueError as masked:
        return _error(400, str(masked), diagnostics=[str(masked)])
    except Exception as exc:  # ruamel cannot load or write it: the check says why
        errors = check_candidates(config_dir, {PROVIDERS_FILE: original})
        message = errors[0] if errors else f"cannot edit {PROVIDERS_FILE}: {exc}"
        return _error(400, message, diagnostics=errors or [message])
    return await _check_and_write(request, {PROVIDERS_FILE: text})


ROUTES = [get_config, post_config, put_instance]
