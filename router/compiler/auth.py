"""Client and admin keys: REQUIRED_API_KEY / ADMIN_API_KEY from the environment plus
`auth.api_keys` / `auth.admin_keys` in routes.yaml. A key naming an unset `${VAR}` is left
out (with a warning) rather than becoming an empty key. The keys as listed in routes.yaml
go to `Written`: `router compile` shows those, not the ones this machine ends up with."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from router.compiler.plan import Auth, Secret
from router.compiler.written import Written
from router.config.loaded import LoadedFile
from router.config.schema import display_path

ENV_KEYS = (("REQUIRED_API_KEY", "api_keys"), ("ADMIN_API_KEY", "admin_keys"))


def compile_auth(
    loaded: LoadedFile, raw: Mapping[str, Any], env: Mapping[str, str], written: Written
) -> Auth:
    keys: dict[str, list[Secret]] = {"api_keys": [], "admin_keys": []}
    for variable, kind in ENV_KEYS:
        if env.get(variable):
            keys[kind].append(Secret(env[variable], env=variable, name=variable))
    for kind in ("api_keys", "admin_keys"):
        listed: list[str | None] = []  # as written: a reference's text, None for a literal
        for index, value in enumerate(raw.get(kind) or ()):
            path = ("auth", kind, index)
            ref = loaded.source.refs.get(path)
            if ref is not None:
                listed.append(ref.text)
            elif value:
                listed.append(None)
            if ref is not None and ref.missing:
                unset = ", ".join(ref.missing)
                loaded.warning(
                    path, f"{display_path(path)}: {unset} is not set; this key is ignored"
                )
            elif value:
                variable = ref.variables[0] if ref else None
                name = variable or f"auth.{kind}[{index}]"
                keys[kind].append(Secret(value, env=variable, name=name))
        written.keep(loaded.name, ("auth", kind), tuple(listed))
    return Auth(api_keys=tuple(keys["api_keys"]), admin_keys=tuple(keys["admin_keys"]))


def is_secret_path(path: tuple[str | int, ...]) -> bool:
    return len(path) == 3 and path[0] == "auth"
