"""Client and admin keys: REQUIRED_API_KEY / ADMIN_API_KEY from the environment plus
`auth.api_keys` / `auth.admin_keys` / `auth.keys` in routes.yaml. A key naming an unset
`${VAR}` is left out (with a warning) rather than becoming an empty key. The keys as
listed in routes.yaml go to `Written`: `router compile` shows those, not the ones this
machine ends up with.

Every client key ends up in `Auth.keys` by the sha256 of the key: the unrestricted ones
(`api_keys`, REQUIRED_API_KEY) and the named ones of `auth.keys` with their scopes and
limits."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from router.access.keys import (
    ClientKey,
    Limits,
    digest,
    models_test,
    parse_expiry,
    written_digest,
)
from router.compiler.expressions import did_you_mean
from router.compiler.glob import glob_problem
from router.compiler.plan import Auth, Secret
from router.compiler.written import Written
from router.config.loaded import LoadedFile
from router.config.schema import display_path

ENV_KEYS = (("REQUIRED_API_KEY", "api_keys"), ("ADMIN_API_KEY", "admin_keys"))


def compile_auth(
    loaded: LoadedFile,
    raw: Mapping[str, Any],
    env: Mapping[str, str],
    written: Written,
    pools: Mapping[str, Any] | None = None,
) -> Auth:
    """`pools`: the pool names a key's `providers` may name (None: not checked)."""
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
    by_digest: dict[str, ClientKey] = {}
    for index, secret in enumerate(keys["api_keys"]):
        name = secret.name or f"key {index + 1}"
        by_digest.setdefault(
            digest(secret.value), ClientKey(name=name, digest=digest(secret.value))
        )
    named_keys = _named_keys(loaded, raw, written, pools)
    for named in named_keys:
        if named.digest in by_digest:
            other = by_digest[named.digest].name
            loaded.warning(("auth", "keys"), f"key {named.name!r} is the same key as {other!r}")
        by_digest[named.digest] = named
    return Auth(
        api_keys=tuple(keys["api_keys"]),
        admin_keys=tuple(keys["admin_keys"]),
        keys=MappingProxyType(by_digest),
        named=tuple(named_keys),
    )


def _named_keys(
    loaded: LoadedFile,
    raw: Mapping[str, Any],
    written: Written,
    pools: Mapping[str, Any] | None,
) -> list[ClientKey]:
    found: list[ClientKey] = []
    names: set[str] = set()
    listed: list[str | None] = []
    for index, entry in enumerate(raw.get("keys") or ()):
        at = ("auth", "keys", index)
        if not isinstance(entry, Mapping) or not loaded.usable(at):
            continue
        ref = loaded.source.refs.get((*at, "key"))
        key = _named_key(loaded, at, entry, ref, pools)
        if key is None:
            continue
        if key.name in names:
            path = (*at, "name")
            loaded.error(path, f"{display_path(path)}: {key.name!r} is used twice")
            continue
        names.add(key.name)
        found.append(key)
        # as written, one per key compiled: a reference's text, a digest, or None
        literal = entry["key"]
        listed.append(ref.text if ref is not None else literal if written_digest(literal) else None)
    written.keep(loaded.name, ("auth", "keys"), tuple(listed))
    return found


def _named_key(
    loaded: LoadedFile,
    at: tuple[str | int, ...],
    entry: Mapping[str, Any],
    ref: Any,
    pools: Mapping[str, Any] | None,
) -> ClientKey | None:
    name, value = entry["name"], entry["key"]
    if ref is not None and ref.missing:
        unset = ", ".join(ref.missing)
        loaded.warning(
            (*at, "key"),
            f"{display_path((*at, 'key'))}: {unset} is not set; key {name!r} is ignored",
        )
        return None
    hashed = written_digest(value) if ref is None else None
    if ref is None and hashed is None and value.lower().startswith("sha256:"):
        loaded.error(
            (*at, "key"), f"{display_path((*at, 'key'))}: a digest is sha256: and 64 hex digits"
        )
        return None
    models = entry.get("models")
    for position, pattern in enumerate(models or ()):
        problem = glob_problem(pattern)
        if problem is not None:
            loaded.error(
                (*at, "models", position), f"{display_path((*at, 'models', position))}: {problem}"
            )
            return None
    providers = entry.get("providers")
    if providers is not None and pools is not None:
        for position, pool in enumerate(providers):
            if pool not in pools:
                path = (*at, "providers", position)
                loaded.error(
                    path,
                    f"{display_path(path)}: unknown provider {pool!r}{did_you_mean(pool, pools)}",
                )
                return None
    expires = None
    if entry.get("expires") is not None:
        try:
            expires = parse_expiry(entry["expires"])
        except ValueError:
            path = (*at, "expires")
            loaded.error(
                path,
                f"{display_path(path)}: {entry['expires']!r} is not a date or date-time",
            )
            return None
    globs = tuple(models) if models is not None else None
    return ClientKey(
        name=name,
        digest=hashed or digest(value),
        models=globs,
        providers=frozenset(providers) if providers is not None else None,
        limits=Limits.from_mapping(entry.get("limits")),
        expires=expires,
        model_test=models_test(globs),
    )


def is_secret_path(path: tuple[str | int, ...]) -> bool:
    """Where routes.yaml holds a secret: a key, or a state engine's URL."""
    if path[:1] == ("auth",):
        return len(path) == 3 or (len(path) == 4 and path[1] == "keys" and path[3] == "key")
    return path in (("state", "redis"), ("state", "database"))
