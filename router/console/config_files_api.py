"""The console's config-file rows, under the admin key:

- `GET /api/upload-configs`: the config dir's YAML files (providers.yaml, routes.yaml,
  routes.test.yaml, pipelines/*.yaml) and the credentials files the Plan's instances name
  inside the config dir, each with its path relative to the config dir, kind, size, mtime;
- `GET /api/upload-configs/view/{path}`: a YAML file as written, its literal secrets
  `***` as GET /api/config shows them (secrets.mask_text; `${...}` references shown), or
  a credentials file with its tokens `***` (account email, expiry, project kept);
- `DELETE /api/upload-configs/delete/{path}`: a credentials file (a YAML file: 400); every
  worker's watcher then finds the instance unconfigured;
- `GET /api/upload-configs/download-all`: a zip of the YAML files, masked as in view,
  without credentials.

Only a listed file is ever read or deleted: a path is looked up among the files listed,
whose real locations (symlinks resolved) lie inside the config dir, so `..`, absolute
paths and symlinks pointing elsewhere are refused whatever their spelling."""

from __future__ import annotations

import asyncio
import io
import json
import os
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from litestar import Request, Response, delete, get

from router.compiler.layout import PIPELINES_DIR, PROVIDERS_FILE, ROUTES_FILE
from router.compiler.plan import SECRET_NAME, Plan
from router.console.config_writes import TESTS_FILE
from router.console.secrets import MASK, mask_text
from router.protocols import ir
from router.protocols.paths import DEFAULT_PROTOCOL as ADMIN_PROTOCOL
from router.server.errors import error_response
from router.server.json_response import json_response
from router.server.management import admin_plan
from router.server.reload import request_reload

ROOT_YAML = (PROVIDERS_FILE, ROUTES_FILE, TESTS_FILE)
# keys of a credentials file that are always secret, besides any secret-looking name
CREDENTIAL_SECRETS = frozenset({"access_token", "refresh_token", "id_token", "client_secret"})
# secret-looking names that describe a token rather than hold one
CREDENTIAL_PLAIN = frozenset({"token_type", "token_uri", "token_url", "expiry", "expiry_date"})


@dataclass(frozen=True, slots=True)
class ConfigFile:
    path: str  # relative to the config dir, `/`-separated
    kind: str  # yaml | credentials
    real: Path  # resolved, inside the config dir
    pool: str | None = None
    instance: str | None = None

    def describe(self) -> dict[str, Any]:
        stat = self.real.stat()
        out: dict[str, Any] = {
            "path": self.path,
            "kind": self.kind,
            "size": stat.st_size,
            "mtime": stat.st_mtime,
        }
        if self.kind == "credentials":
            out["pool"], out["instance"] = self.pool, self.instance
        return out


def _inside(root: Path, path: Path) -> Path | None:
    """`path` resolved, if it is a regular file inside `root` (itself resolved)."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not real.is_relative_to(root) or real == root or not real.is_file():
        return None
    return real


def config_files(plan: Plan) -> dict[str, ConfigFile]:
    """The files the console shows, by relative path."""
    root = Path(plan.config_dir).resolve()
    files: dict[str, ConfigFile] = {}
    candidates = [root / name for name in ROOT_YAML]
    pipelines = root / PIPELINES_DIR
    if pipelines.is_dir():
        candidates += sorted(p for p in pipelines.iterdir() if p.suffix in (".yaml", ".yml"))
    for path in candidates:
        real = _inside(root, path)
        if real is not None:
            relative = path.relative_to(root).as_posix()
            files[relative] = ConfigFile(relative, "yaml", real)
    for pool, provider in sorted(plan.providers.items()):
        for instance in provider.instances:
            written = instance.options.get("credentials")
            if written is None:
                continue
            path = Path(str(written))
            if not path.is_absolute():
                path = root / path
            real = _inside(root, path)
            if real is None:
                continue  # missing, or outside the config dir (e.g. ~/.gemini): not ours
            relative = os.path.relpath(os.path.abspath(path), root).replace(os.sep, "/")
            if relative.startswith("../") or relative in files:
                continue
            files[relative] = ConfigFile(relative, "credentials", real, pool, instance.id)
    return files


def _lookup(plan: Plan, path: str) -> ConfigFile:
    """The listed file at `path` (relative to the config dir); ir.Error 400/404."""
    path = path.removeprefix("/")  # Litestar's `path` parameters start with one
    parts = path.replace("\\", "/").split("/")
    if not path or "\x00" in path or path.startswith("/") or ".." in parts or ":" in parts[0]:
        raise ir.Error(400, "invalid_request", "the path must be relative to the config dir")
    found = config_files(plan).get(path)
    if found is None:
        raise ir.Error(404, "not_found", f"no config or credentials file {path!r}")
    return found


# ---- credentials files


def redact_credentials(value: Any, key: str = "") -> Any:
    """A credentials document with its tokens and secrets `***`."""
    if isinstance(value, dict):
        return {k: redact_credentials(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_credentials(v, key) for v in value]
    if key in CREDENTIAL_SECRETS or (key not in CREDENTIAL_PLAIN and SECRET_NAME.search(key)):
        return MASK if value not in (None, "") else value
    return value


def credentials_expiry(document: Any) -> str | None:
    """When the access token expires (gemini-cli's `expiry_date` in ms, google-auth's
    `expiry`, authlib's `expires_at` in s), as RFC 3339."""
    if not isinstance(document, dict):
        return None
    if isinstance(document.get("expiry"), str):
        return document["expiry"]
    for key, scale in (("expiry_date", 1000), ("expires_at", 1)):
        value = document.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(value / scale, UTC).isoformat().replace("+00:00", "Z")
    return None


def _view(found: ConfigFile) -> dict[str, Any]:
    document = found.describe()
    text = found.real.read_text(encoding="utf-8", errors="replace")
    if found.kind == "yaml":
        document["content"] = mask_text(found.path, text)
        return document
    try:
        parsed = json.loads(text)
    except ValueError:
        document["content"] = None
        document["error"] = "not JSON: not shown"
        return document
    document["content"] = redact_credentials(parsed)
    document["expiry"] = credentials_expiry(parsed)
    return document


def _zip(files: list[ConfigFile]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for found in files:
            text = found.real.read_text(encoding="utf-8", errors="replace")
            archive.writestr(found.path, mask_text(found.path, text))
    return buffer.getvalue()


# ---- handlers


@get("/api/upload-configs")
async def list_files(request: Request) -> Response:
    try:
        plan = admin_plan(request)
    except ir.Error as error:
        return error_response(ADMIN_PROTOCOL, error)

    def listing() -> list[dict[str, Any]]:
        out = []
        for found in config_files(plan).values():
            try:
                out.append(found.describe())
            except OSError:  # removed meanwhile
                continue
        return out

    files = await asyncio.to_thread(listing)
    return json_response({"config_dir": plan.config_dir, "files": files})


@get("/api/upload-configs/view/{path:path}")
async def view_file(request: Request, path: str) -> Response:
    try:
        found = _lookup(admin_plan(request), path)
        document = await asyncio.to_thread(_view, found)
    except ir.Error as error:
        return error_response(ADMIN_PROTOCOL, error)
    except OSError:
        return error_response(ADMIN_PROTOCOL, ir.Error(404, "not_found", "the file is gone"))
    return json_response(document)


@delete("/api/upload-configs/delete/{path:path}", status_code=200)
async def delete_file(request: Request, path: str) -> Response:
    try:
        found = _lookup(admin_plan(request), path)
        if found.kind != "credentials":
            message = "only credentials files can be deleted; config files change in git"
            raise ir.Error(400, "invalid_request", message)
        await asyncio.to_thread(found.real.unlink)
    except ir.Error as error:
        return error_response(ADMIN_PROTOCOL, error)
    except FileNotFoundError:
        return error_response(ADMIN_PROTOCOL, ir.Error(404, "not_found", "the file is gone"))
    request_reload()  # every worker recompiles: the instance is unconfigured now
    return json_response({"deleted": found.path, "pool": found.pool, "instance": found.instance})


@get("/api/upload-configs/download-all")
async def download_all(request: Request) -> Response:
    try:
        plan = admin_plan(request)
    except ir.Error as error:
        return error_response(ADMIN_PROTOCOL, error)
    files = [f for f in config_files(plan).values() if f.kind == "yaml"]
    body = await asyncio.to_thread(_zip, files)
    headers = {"content-disposition": 'attachment; filename="router-config.zip"'}
    return Response(body, media_type="application/zip", headers=headers)


ROUTES = [list_files, view_file, delete_file, download_all]
