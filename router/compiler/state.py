"""`state:` of routes.yaml: the shared engines of a set of servers. A URL left empty (or
naming an unset variable) falls back to ROUTER_REDIS_URL / ROUTER_DATABASE_URL; neither
leaves the embedded store alone."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from router.compiler.plan import Secret, StateEngines
from router.config.loaded import LoadedFile
from router.config.schema import display_path

ENV_URLS = {"redis": "ROUTER_REDIS_URL", "database": "ROUTER_DATABASE_URL"}
_SCHEMES = {
    "redis": ("redis://", "rediss://", "unix://"),
    "database": ("postgres://", "postgresql://"),
}


def compile_state(
    loaded: LoadedFile, raw: Mapping[str, Any], env: Mapping[str, str]
) -> StateEngines:
    urls: dict[str, Secret | None] = {}
    for engine, variable in ENV_URLS.items():
        path = ("state", engine)
        ref = loaded.source.refs.get(path)
        value = raw.get(engine)
        secret = None
        if value and not (ref is not None and ref.missing):
            secret = Secret(value, env=ref.variables[0] if ref and ref.variables else None)
        elif env.get(variable):
            value, secret = env[variable], Secret(env[variable], env=variable)
        if ref is not None and ref.missing and secret is None:
            unset = ", ".join(ref.missing)
            loaded.warning(
                path, f"{display_path(path)}: {unset} is not set; the embedded store is used"
            )
        if secret is not None and not secret.value.startswith(_SCHEMES[engine]):
            schemes = " or ".join(_SCHEMES[engine])
            where = f"{display_path(path)}" if secret.env != variable else variable
            loaded.error(path, f"{where}: must be a URL starting with {schemes}")
            secret = None
        urls[engine] = secret
    return StateEngines(
        redis=urls["redis"],
        database=urls["database"],
        fail_closed=bool(raw.get("fail_closed", False)),
    )
