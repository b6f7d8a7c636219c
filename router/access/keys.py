"""A client key as the gateway knows it: its name, the sha256 of the key (the key itself
is never kept), what it may reach and its limits. Keys come from routes.yaml
(`auth.keys`, `auth.api_keys`, REQUIRED_API_KEY) and from the state store (runtime keys
made with `POST /api/keys`); both are looked up by digest, one dictionary lookup."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

DIGEST_PREFIX = "sha256:"
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def digest(key: str) -> str:
    """The hex sha256 of `key`: how a key is stored and looked up."""
    return hashlib.sha256(key.encode()).hexdigest()


def written_digest(value: str) -> str | None:
    """The hex digest of a `sha256:<hex>` value as written in config; None when `value`
    is a key, not a digest."""
    lowered = value.strip().lower()
    return lowered[len(DIGEST_PREFIX) :] if _DIGEST.match(lowered) else None


@dataclass(frozen=True, slots=True)
class Limits:
    """What one key may spend. None: no limit of that kind."""

    rpm: int | None = None  # requests admitted in any 60 s
    tpm: int | None = None  # tokens reported in any 60 s
    concurrency: int | None = None  # requests in flight
    daily_tokens: int | None = None  # tokens reported since UTC midnight
    monthly_requests: int | None = None  # requests admitted since the UTC month began

    limited: bool = field(init=False, repr=False, compare=False)  # any limit set
    # a request's end changes a count (a slot to free, tokens to charge)
    settles: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        limited = any(getattr(self, name) is not None for name in LIMIT_NAMES)
        object.__setattr__(self, "limited", limited)
        settles = any(x is not None for x in (self.concurrency, self.tpm, self.daily_tokens))
        object.__setattr__(self, "settles", settles)

    def __bool__(self) -> bool:
        return self.limited

    def as_dict(self) -> dict[str, int]:
        return {name: value for name in LIMIT_NAMES if (value := getattr(self, name)) is not None}

    @classmethod
    def from_mapping(cls, raw: Mapping[str, object] | None) -> Limits:
        raw = raw or {}
        return cls(**{name: int(raw[name]) for name in LIMIT_NAMES if raw.get(name) is not None})  # type: ignore[call-overload]


LIMIT_NAMES = ("rpm", "tpm", "concurrency", "daily_tokens", "monthly_requests")
NO_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class ClientKey:
    name: str  # what records, usage, metrics and logs show
    digest: str  # hex sha256 of the key
    models: tuple[str, ...] | None = None  # globs; None: any model
    providers: frozenset[str] | None = None  # pools; None: any pool
    limits: Limits = NO_LIMITS
    expires: float | None = None  # unix time; None: never
    runtime: bool = False  # made with /api/keys (else: from routes.yaml or the environment)
    prefix: str = ""  # the first characters of the key, to tell keys apart in lists
    revoked: bool = False  # a runtime key revoked: refused with 401 until forgotten
    model_test: Callable[[str], bool] | None = field(
        default=None, repr=False, compare=False
    )  # compiled from `models`

    @property
    def restricted(self) -> bool:
        return self.models is not None or self.providers is not None

    def may_use_model(self, model: str) -> bool:
        return self.model_test is None or self.model_test(model)

    def may_use_pool(self, pool: str) -> bool:
        return self.providers is None or pool in self.providers

    def expired(self, now: float) -> bool:
        return self.expires is not None and now >= self.expires


def models_test(globs: tuple[str, ...] | None) -> Callable[[str], bool] | None:
    """One predicate for a key's model globs: any of them matches. None: any model."""
    if globs is None:
        return None
    from router.compiler.glob import glob_test  # here: router.compiler imports this module

    tests = tuple(glob_test(pattern) for pattern in globs)
    if len(tests) == 1:
        return tests[0]
    return lambda model: any(test(model) for test in tests)


def parse_expiry(value: object) -> float:
    """A key's `expires` as unix time: a date (its UTC midnight), a date-time (UTC unless
    it names a zone), or unix seconds. Raises ValueError."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a date (2027-01-01) or a date-time")
    text = value.strip().replace("Z", "+00:00")
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
