"""Key policy: the rules a key breaks, and when its rotation and its max age fall due.
The exporter asks per key for the rotation-due time, the max-age deadline and the rules broken
whatever the time. Deadlines are timestamps, not verdicts (Prometheus wants timestamps, alerts
compare them with ``time()``); a ``TIME_RULES`` rule is broken once ``now >= deadline``, in the
states the caller evaluates. Defaults, each with its NIST source, ship in ``policy_default.yaml``;
a file is merged over them (``docs/policy.md``). Scrapes walk up to a million keys, so answers
are resolved once per distinct (algorithm, size, curve) or (algorithm, purpose) and cached.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, ValidationError

RULES: tuple[str, ...] = ("banned_algorithm", "min_key_size", "operations_limit", "max_age", "rotation_overdue")
# Decided by comparing a deadline with now (broken when now >= deadline); the rest by the facts alone.
TIME_RULES = frozenset({"max_age", "rotation_overdue"})
DEFAULT_SOURCE = "built-in defaults"
Family = Literal["rsa", "dsa", "dh", "ecc", "aes", "hmac"]

_YEAR = 365 * 86400  # as Prometheus counts a year; the NIST periods are whole years, not calendars
_UNITS = {"": 1, "y": _YEAR, "w": 7 * 86400, "d": 86400, "h": 3600, "min": 60, "s": 1}
_MAX_SECONDS = 100 * _YEAR  # longer than any cryptoperiod: a unit mix-up, not a policy
_DURATION = re.compile(r"\d+(?:\.\d+)?|(?:\d+(?:\.\d+)?\s*[a-z]+\s*)+")  # "3600" is seconds
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)")
_POWER = re.compile(r"2\s*(?:\^|\*\*)\s*(\d{1,2})")
_FAMILY = re.compile(  # the family an algorithm name belongs to, by its first characters
    r"(?P<rsa>rsa)|(?P<ecc>ecdsa|ecdh|ecies|eddsa|ed25519|ed448|x25519|x448|ec-|ec$)|(?P<dsa>dsa)|(?P<dh>ffdh|dh)"
    r"|(?P<aes>aes)|(?P<hmac>hmac)"
)
_ECC_BITS = re.compile(r"(?:p-?|secp|prime|brainpoolp|ed|x|curve)(\d{3})")  # p-256, secp384r1, ed25519 -> 255
_AES_BITS = re.compile(r"^aes-?(128|192|256)(?!\d)")
_FF_BITS = re.compile(r"(?<!\d)(\d{4,5})(?!\d)")  # rsa-3072, ffdhe2048; never the 256 of "rsa-sha256"
_SIZE_IN_NAME = {"ecc": _ECC_BITS, "aes": _AES_BITS, "rsa": _FF_BITS, "dsa": _FF_BITS, "dh": _FF_BITS}
_CACHE_MAX = 65_536  # distinct (algorithm, size, curve) combinations are few; this only bounds abuse
_UNSET: Any = object()
_OPS = frozenset({"operations_limit"})


class PolicyError(ValueError):
    """The policy cannot be used; the message names the file and every wrong setting."""


@dataclass(frozen=True, slots=True)
class KeyFacts:
    """What the policy needs to know about one key, as the registry holds it (times in unix seconds)."""

    key_id: str
    state: str | None  # a keylife.lifecycle.KeyState value, or None
    algorithm: str | None
    key_size: int | None
    curve: str | None
    purpose: str | None
    created_at: float | None
    activated_at: float | None
    expires_at: float | None
    usage_total: int


def parse_duration(value: Any) -> int | float:
    """Seconds from "2y", "90d", "1y30d", "12h", "30min", "45s" or a number of seconds. A bare
    "m" is refused: minutes or months is a guess a security policy must not make."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a duration such as '90d' or a number of seconds, not {value!r}")
    seconds = 0.0 if isinstance(value, str) else float(value)
    text = value.strip().lower() if isinstance(value, str) else ""
    if text and not _DURATION.fullmatch(text):
        raise ValueError(f"{value!r} is not a duration; write e.g. 2y, 90d, 12h, 30min, 45s or seconds")
    for number, unit in _PART.findall(text):
        if unit not in _UNITS:
            hint = " (minutes or months? write 30min, or months as days: 180d)" if unit in ("m", "mo") else ""
            raise ValueError(f"{value!r}: unknown unit {unit!r}{hint}; units: y, w, d, h, min, s")
        seconds += float(number) * _UNITS[unit]
    if not (math.isfinite(seconds) and 0 < seconds <= _MAX_SECONDS):
        raise ValueError(f"{value!r}: a duration must be more than 0 and at most 100y")
    return int(seconds) if seconds.is_integer() else seconds  # whole seconds read back as written


def _count(value: Any) -> int | None:
    """An operation budget: a positive integer, or "2^32" / "2**32" as the standards write it."""
    if isinstance(value, str) and (match := _POWER.fullmatch(value.strip())):
        value = 2 ** int(match[1])
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 2**64):
        raise ValueError(f"expected a whole number of operations from 1 to 2^64, such as 4294967296 or 2^32: {value!r}")
    return value


Duration = Annotated[int | float | None, BeforeValidator(lambda v: None if v is None else parse_duration(v))]
OpCount = Annotated[int | None, BeforeValidator(_count)]
Bits = Annotated[int, Field(ge=1, le=65536)]
Note = Annotated[str, Field(max_length=500)] | None  # the source of a value: shown by describe()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PurposeRule(_Strict):
    rotation_period: Duration = None
    max_age: Duration = None
    note: Note = None


class AlgorithmRule(_Strict):
    banned: bool = False
    min_key_size: Bits | None = None
    operations_limit: OpCount = None
    rotation_period: Duration = None
    note: Note = None


class PolicyDocument(_Strict):
    """The file's schema; ``model_fields_set`` of an algorithm entry drives the cascade."""

    version: Literal[1] = 1
    purposes: dict[Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")], PurposeRule] = {}
    algorithms: dict[Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9.+-]{0,63}$")], AlgorithmRule] = {}
    min_key_size: dict[Family, Bits | None] = {}


def _name(section: str, name: str) -> str:
    """Names compare ignoring case, and "_" and "-" alike (purposes take "_", the others "-")."""
    name = name.strip().lower()
    return name.replace("-", "_") if section == "purposes" else name.replace("_", "-")


def _bits(family: str | None, algorithm: str, key_size: int | None, curve: str | None) -> int | None:
    """The key's size in bits: as reported, else from the curve, else from the algorithm's name."""
    pattern = _SIZE_IN_NAME.get(family or "")
    if key_size is not None or pattern is None:
        return key_size
    match = (pattern.search(curve.lower()) if curve and family == "ecc" else None) or pattern.search(algorithm)
    return int(match[1]) if match else None


class Policy:
    """A validated policy. Every method is a pure function of the facts it is given."""

    __slots__ = ("_cache", "_doc", "source")

    def __init__(self, document: PolicyDocument, source: str) -> None:
        self.source = source
        self._doc = document
        self._cache: dict[tuple[Any, ...], Any] = {}  # (resolver, *raw facts) -> answer

    def _setting(self, algorithm: str, field: str) -> Any:
        """The most specific entry that sets ``field``: the name itself, then each prefix ending before a '-'."""
        name = algorithm
        while True:
            rule = self._doc.algorithms.get(name)
            if rule is not None and field in rule.model_fields_set:
                return getattr(rule, field)
            cut = name.rfind("-")
            if cut <= 0:
                return _UNSET
            name = name[:cut]

    def _purpose(self, purpose: str | None) -> PurposeRule | None:
        return None if purpose is None else self._doc.purposes.get(_name("purposes", purpose))

    def _cached(self, *key: Any) -> Any:
        """``key[0](*key[1:])``, computed once per distinct raw facts (not normalised: cheaper)."""
        value = self._cache.get(key, _UNSET)
        if value is _UNSET:
            value = key[0](*key[1:])
            if len(self._cache) < _CACHE_MAX:
                self._cache[key] = value
        return value

    def _resolve_static(self, algorithm: str | None, key_size: int | None, curve: str | None) -> tuple[Any, ...]:
        if algorithm is None:
            return frozenset(), None
        name = _name("algorithms", algorithm)
        rules: set[str] = set()
        if self._setting(name, "banned") is True:
            rules.add("banned_algorithm")
        family = match.lastgroup if (match := _FAMILY.match(name)) else None
        minimum = self._setting(name, "min_key_size")
        if minimum is _UNSET:
            minimum = self._doc.min_key_size.get(family) if family else None
        bits = _bits(family, name, key_size, curve)
        if minimum is not None and bits is not None and bits < minimum:
            rules.add("min_key_size")
        limit = self._setting(name, "operations_limit")
        return frozenset(rules), (None if limit is _UNSET else limit)

    def _resolve_period(self, algorithm: str | None, purpose: str | None) -> float | None:
        own = self._setting(_name("algorithms", algorithm), "rotation_period") if algorithm is not None else None
        periods = (getattr(self._purpose(purpose), "rotation_period", None), own)
        known = [p for p in periods if p is not None and p is not _UNSET]
        return min(known) if known else None  # both limits hold: the shorter one wins

    def rotation_due(self, key: KeyFacts) -> float | None:
        """When the key's cryptoperiod ends: (activated_at, else created_at) + the period for its
        purpose, tightened by its algorithm's; None when no period applies or no start is known."""
        start = key.activated_at if key.activated_at is not None else key.created_at
        period = self._cached(self._resolve_period, key.algorithm, key.purpose)
        return None if period is None or start is None else start + period

    def max_age_deadline(self, key: KeyFacts) -> float | None:
        """created_at + the max age for the key's purpose: past it a usable key is out of policy
        whatever its rotation plan. None when the purpose has no max age or creation is unknown."""
        age = getattr(self._cached(self._purpose, key.purpose), "max_age", None)
        return None if age is None or key.created_at is None else key.created_at + age

    def static_violations(self, key: KeyFacts) -> frozenset[str]:
        """The rules broken whatever the time: banned_algorithm, min_key_size, and operations_limit
        (usage_total >= the budget). A fact that is not known breaks nothing."""
        rules, limit = self._cached(self._resolve_static, key.algorithm, key.key_size, key.curve)
        return rules | _OPS if limit is not None and key.usage_total >= limit else rules

    def operations_limit(self, key: KeyFacts) -> int | None:
        """The key's operation budget from its algorithm (2^32 for AES-GCM), None when it has none."""
        return self._cached(self._resolve_static, key.algorithm, key.key_size, key.curve)[1]

    def describe(self) -> dict[str, Any]:
        """The effective policy as a policy file (durations in seconds) plus its source: what
        a future /v1/policy could serve, and valid input for load_policy (``source`` is ignored there)."""
        doc = self._doc
        return {
            "version": doc.version,
            "source": self.source,
            "purposes": {
                n: r.model_dump(exclude={"note"} if r.note is None else None) for n, r in doc.purposes.items()
            },
            "algorithms": {n: r.model_dump(exclude_unset=True) for n, r in doc.algorithms.items()},
            "min_key_size": dict(doc.min_key_size),
        }


def _read(path: Path | None, source: str) -> dict[str, Any]:
    """The YAML mapping at ``path``; None reads the defaults shipped inside the package."""
    file = resources.files("exporter").joinpath("policy_default.yaml") if path is None else path
    try:
        loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PolicyError(f"{source}: cannot read: {exc.strerror or exc}") from exc
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{source}: not valid YAML: {exc}") from exc
    if loaded is not None and not isinstance(loaded, dict):
        raise PolicyError(f"{source}: the top level must be a mapping of settings")
    return loaded or {}


def _prepare(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """Names normalised (case, '_' vs '-') so a file's "AES_256_GCM" overrides the default entry."""
    out = {k: v for k, v in raw.items() if k != "source"}  # describe() output is valid input
    for section in ("purposes", "algorithms", "min_key_size"):
        entries = out[section] = {} if out.get(section) is None else out[section]
        if not isinstance(entries, dict):
            continue  # validation names the section and the type it wants
        merged: dict[str, Any] = {}
        for name, entry in entries.items():
            key = _name(section, str(name))
            if key in merged:
                raise PolicyError(f"{source}: {section}.{name}: names '{key}' a second time (case and _/- are ignored)")
            merged[key] = {} if entry is None and section != "min_key_size" else entry
        out[section] = merged
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merge(merged[key], value) if both else value
    return merged


def _validate(raw: dict[str, Any], source: str) -> PolicyDocument:
    try:
        return PolicyDocument.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            setting = ".".join(str(part) for part in err["loc"])
            message = "unknown setting" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"  {setting}: {message.removeprefix('Value error, ')}")
        raise PolicyError(f"{source}: invalid policy settings:\n" + "\n".join(problems)) from None


def load_policy(path: Path | None = None) -> Policy:
    """The built-in defaults with the file at ``path`` merged over them per purpose, per algorithm
    and per setting, so a file that changes one value keeps every other default."""
    defaults = _prepare(_read(None, DEFAULT_SOURCE), DEFAULT_SOURCE)
    if path is None:
        return Policy(_validate(defaults, DEFAULT_SOURCE), DEFAULT_SOURCE)
    source = str(path)
    return Policy(_validate(_merge(defaults, _prepare(_read(Path(path), source), source)), source), source)
