"""Key policy: each rule at its boundary, the defaults and their merge, errors that name the setting."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest
import yaml

from exporter.policy import RULES, TIME_RULES, KeyFacts, PolicyError, load_policy, parse_duration
from keylife.demo.scenario import PROFILES

DAY = 86_400
YEAR = 365 * DAY
T0 = 1_700_000_000.0
DEFAULTS = load_policy()


def key(**facts: object) -> KeyFacts:
    base: dict[str, object] = {
        "key_id": "k1",
        "state": "active",
        "algorithm": "aes-256-gcm",
        "key_size": 256,
        "curve": None,
        "purpose": "encryption",
        "created_at": T0,
        "activated_at": T0 + DAY,
        "expires_at": None,
        "usage_total": 0,
    }
    return KeyFacts(**{**base, **facts})  # type: ignore[arg-type]


def breaks(deadline: float | None, now: float) -> bool:
    """The TIME_RULES convention: a deadline is broken from its own instant on."""
    return deadline is not None and now >= deadline


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def test_rule_names() -> None:
    assert RULES == ("banned_algorithm", "min_key_size", "operations_limit", "max_age", "rotation_overdue")
    assert sorted(TIME_RULES) == ["max_age", "rotation_overdue"] and TIME_RULES.issubset(RULES)
    with pytest.raises(dataclasses.FrozenInstanceError):
        key().usage_total = 1  # type: ignore[misc]


def test_defaults_load_from_the_package() -> None:
    assert DEFAULTS.source == "built-in defaults"
    doc = DEFAULTS.describe()
    assert doc["purposes"]["signing"] == {"rotation_period": YEAR, "max_age": 3 * YEAR}
    for purpose in ("authentication", "encryption", "key_wrap", "mac", "key_agreement"):
        assert doc["purposes"][purpose] == {"rotation_period": YEAR, "max_age": 2 * YEAR}
    assert doc["min_key_size"] == {"rsa": 2048, "dsa": 2048, "dh": 2048, "ecc": 224, "aes": 128, "hmac": 112}
    assert doc["algorithms"]["aes-256-gcm"]["operations_limit"] == 2**32
    assert all(entry.get("note") for entry in doc["algorithms"].values())  # every default says where it comes from


def test_the_yaml_is_packaged() -> None:
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert "*.yaml" in pyproject["tool"]["setuptools"]["package-data"]["exporter"]


# An entry covers the longer names that start with it and a '-' ("3des" covers "3des-cbc"), in any case.
BANNED = "3des 3DES 3des-cbc DES_EDE3_CBC des tdea rc4 arcfour md5 hmac-md5 sha1 rsa-sha1 ecdsa-sha1 dsa dsa-sha256"
# HMAC-SHA-1 stays acceptable (SP 800-131A Rev. 2 section 10); a prefix counts only up to a '-'.
ALLOWED = "hmac-sha1 aes-256-gcm aes-128-gcm ed25519 ecdsa-p256 rsa hmac-sha256 desk-cipher made-up"


@pytest.mark.parametrize(
    ("algorithm", "banned"), [(a, True) for a in BANNED.split()] + [(a, False) for a in ALLOWED.split()]
)
def test_banned_algorithm(algorithm: str, banned: bool) -> None:
    facts = key(algorithm=algorithm, key_size=None)
    assert ("banned_algorithm" in DEFAULTS.static_violations(facts)) is banned
    assert DEFAULTS.static_violations(key(algorithm=None, key_size=1)) == frozenset()


@pytest.mark.parametrize(
    ("algorithm", "size", "curve", "too_small"),
    [
        ("rsa", 2047, None, True),
        ("rsa", 2048, None, False),
        ("RSA-PSS", 1024, None, True),
        ("rsa-1024", None, None, True),  # size from the name
        ("rsa-sha256", None, None, False),  # 256 is the hash, not the modulus: undecided, so nothing fires
        ("rsa", None, None, False),
        ("ecdsa", None, "secp192r1", True),
        ("ecdsa", None, "P-224", False),
        ("ecdsa-p256", None, None, False),
        ("ecdsa", 223, None, True),
        ("ecdsa", 224, None, False),
        ("ed25519", None, None, False),  # 255-bit field
        ("ed25519", 256, None, False),
        ("aes-256-gcm", None, None, False),
        ("aes", 64, None, True),
        ("aes-128-gcm", 128, None, False),
        ("hmac-sha256", 111, None, True),
        ("hmac-sha256", 112, None, False),
        ("hmac-sha256", None, None, False),
        ("ffdhe1536", None, None, True),
        ("dh", 2048, None, False),
        ("unknown-cipher", 8, None, False),  # no family, no minimum
    ],
)
def test_min_key_size(algorithm: str, size: int | None, curve: str | None, too_small: bool) -> None:
    facts = key(algorithm=algorithm, key_size=size, curve=curve)
    assert ("min_key_size" in DEFAULTS.static_violations(facts)) is too_small


def test_operations_limit_at_the_boundary() -> None:
    for algorithm in ("aes-128-gcm", "AES-256-GCM", "aes_192_gcm", "aes-gcm"):
        assert DEFAULTS.operations_limit(key(algorithm=algorithm)) == 2**32
        assert "operations_limit" not in DEFAULTS.static_violations(key(algorithm=algorithm, usage_total=2**32 - 1))
        assert "operations_limit" in DEFAULTS.static_violations(key(algorithm=algorithm, usage_total=2**32))
    assert DEFAULTS.operations_limit(key(algorithm="aes-256-gcm-siv")) is None  # its own entry lifts the bound
    assert DEFAULTS.operations_limit(key(algorithm="ed25519")) is None
    assert DEFAULTS.static_violations(key(algorithm="ed25519", usage_total=2**62)) == frozenset()


def test_rules_combine() -> None:
    facts = key(algorithm="rsa-sha1", key_size=1024, purpose="signing")
    assert DEFAULTS.static_violations(facts) == {"banned_algorithm", "min_key_size"}


def test_rotation_overdue_at_the_boundary() -> None:
    facts = key()
    due = DEFAULTS.rotation_due(facts)
    assert due == T0 + DAY + YEAR  # counted from activation
    assert not breaks(due, due - 1) and breaks(due, due)
    assert DEFAULTS.rotation_due(key(activated_at=None)) == T0 + YEAR  # never activated: from creation
    assert DEFAULTS.rotation_due(key(activated_at=None, created_at=None)) is None
    assert DEFAULTS.rotation_due(key(purpose="signing", algorithm="ed25519")) == T0 + DAY + YEAR
    assert DEFAULTS.rotation_due(key(purpose="Key-Wrap", algorithm="rsa")) == T0 + DAY + YEAR
    assert DEFAULTS.rotation_due(key(purpose="telepathy")) is None  # no period for an unknown purpose
    assert DEFAULTS.rotation_due(key(purpose=None)) is None


def test_max_age_at_the_boundary() -> None:
    deadline = DEFAULTS.max_age_deadline(key(purpose="signing"))
    assert deadline == T0 + 3 * YEAR  # counted from creation, not activation
    assert not breaks(deadline, deadline - 1) and breaks(deadline, deadline)
    assert DEFAULTS.max_age_deadline(key(purpose="encryption")) == T0 + 2 * YEAR
    assert DEFAULTS.max_age_deadline(key(purpose="MAC")) == T0 + 2 * YEAR
    assert DEFAULTS.max_age_deadline(key(purpose="telepathy")) is None
    assert DEFAULTS.max_age_deadline(key(created_at=None)) is None


def test_deadlines_are_pure_functions_of_the_facts() -> None:
    for state in ("pre_activation", "active", "suspended", "revoked", None):
        assert DEFAULTS.rotation_due(key(state=state)) == T0 + DAY + YEAR
        assert DEFAULTS.max_age_deadline(key(state=state)) == T0 + 2 * YEAR


def test_override_of_one_purpose_keeps_the_other_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "purposes:\n  Signing:\n    rotation_period: 90d\n  encryption:\n    max_age: null\n")
    policy = load_policy(path)
    assert policy.source == str(path)
    assert policy.rotation_due(key(purpose="signing", activated_at=T0)) == T0 + 90 * DAY
    assert policy.max_age_deadline(key(purpose="signing")) == T0 + 3 * YEAR  # the setting it did not name
    assert policy.max_age_deadline(key(purpose="encryption")) is None  # null switches a limit off
    assert policy.rotation_due(key(purpose="encryption", activated_at=T0)) == T0 + YEAR
    assert policy.max_age_deadline(key(purpose="mac")) == T0 + 2 * YEAR
    assert "banned_algorithm" in policy.static_violations(key(algorithm="3des"))


def test_algorithm_overrides_cascade(tmp_path: Path) -> None:
    text = (
        "algorithms:\n"
        "  AES_256_GCM: {operations_limit: 1000}\n"  # names match whatever their case and separators
        "  dsa: {banned: false}\n"
        "  3des-cbc: {operations_limit: 10}\n"
        "  aes: {rotation_period: 30d}\n"
        "  blowfish: {banned: true, note: house rule}\n"
        "  camellia: {min_key_size: 192}\n"
        "min_key_size:\n  rsa: 3072\n  hmac: null\n"
    )
    policy = load_policy(write(tmp_path, text))
    assert policy.operations_limit(key(algorithm="aes-256-gcm")) == 1000
    assert policy.operations_limit(key(algorithm="aes-128-gcm")) == 2**32
    assert "banned_algorithm" not in policy.static_violations(key(algorithm="dsa", key_size=2048))
    assert policy.static_violations(key(algorithm="3des-cbc", usage_total=10)) == {
        "banned_algorithm",
        "operations_limit",
    }
    assert policy.rotation_due(key(algorithm="aes-256-gcm", activated_at=T0)) == T0 + 30 * DAY  # the shorter wins
    assert policy.rotation_due(key(algorithm="aes-256-gcm", purpose=None, activated_at=T0)) == T0 + 30 * DAY
    assert policy.static_violations(key(algorithm="blowfish-cbc")) == {"banned_algorithm"}
    assert policy.static_violations(key(algorithm="camellia-128", key_size=128)) == {"min_key_size"}
    assert policy.static_violations(key(algorithm="rsa", key_size=2048)) == {"min_key_size"}
    assert policy.static_violations(key(algorithm="hmac-sha256", key_size=64)) == frozenset()


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("2y", 2 * YEAR),
        ("90d", 90 * DAY),
        ("12h", 43_200),
        ("30min", 1800),
        ("45s", 45),
        ("2w", 14 * DAY),
        ("1y30d", YEAR + 30 * DAY),
        (" 1.5d ", 1.5 * DAY),
        ("3600", 3600),
        (3600, 3600),
        (0.5, 0.5),
    ],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "soon", "6m", "3mo", "0d", -5, 0, True, None, "200y", "1y30", "d", [1]])
def test_nonsense_durations_are_refused(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (
            "purposes:\n  signing:\n    rotation_period: soon\n",
            "purposes.signing.rotation_period: 'soon' is not a duration",
        ),
        (
            "purposes:\n  signing:\n    max_age: 6m\n",
            "purposes.signing.max_age: '6m': unknown unit 'm' (minutes or months?",
        ),
        ("purposes:\n  signing:\n    max_age: -1d\n", "purposes.signing.max_age:"),
        ("purposes:\n  signing:\n    rotaton_period: 1y\n", "purposes.signing.rotaton_period: unknown setting"),
        ("colour: blue\n", "colour: unknown setting"),
        ("version: 2\n", "version:"),
        ("min_key_size:\n  rsa: 0\n", "min_key_size.rsa:"),
        ("min_key_size:\n  camellia: 128\n", "min_key_size.camellia"),
        ("algorithms:\n  aes-256-gcm:\n    operations_limit: lots\n", "algorithms.aes-256-gcm.operations_limit:"),
        ("algorithms:\n  aes-256-gcm:\n    banned: maybe\n", "algorithms.aes-256-gcm.banned:"),
        ("algorithms:\n  'bad name!': {banned: true}\n", "algorithms.bad name!"),
        ("purposes: [signing]\n", "purposes:"),
        ("algorithms:\n  AES-256-GCM: {}\n  aes_256_gcm: {}\n", "algorithms.aes_256_gcm: names 'aes-256-gcm' a second"),
    ],
)
def test_bad_settings_are_named_with_the_file(tmp_path: Path, text: str, named: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    assert str(path) in str(err.value) and named in str(err.value)


def test_bad_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "missing.yaml")
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_policy(write(tmp_path, "purposes: {signing: [\n"))
    with pytest.raises(PolicyError, match="top level must be a mapping"):
        load_policy(write(tmp_path, "- signing\n"))
    assert load_policy(write(tmp_path, "# only comments\n")).describe()["purposes"] == DEFAULTS.describe()["purposes"]
    empty_section = load_policy(write(tmp_path, "purposes:\nalgorithms:\n  3des:\n"))
    assert "banned_algorithm" in empty_section.static_violations(key(algorithm="3des"))


@pytest.mark.parametrize(
    "text",
    ["", "purposes:\n  signing: {rotation_period: 90d, max_age: null}\nalgorithms:\n  aes: {rotation_period: 12h}\n"],
)
def test_describe_round_trips(tmp_path: Path, text: str) -> None:
    first = load_policy(write(tmp_path, text))
    saved = tmp_path / "saved.yaml"
    saved.write_text(yaml.safe_dump(first.describe(), sort_keys=False))
    second = load_policy(saved)
    assert second.source == str(saved)
    assert {**second.describe(), "source": first.source} == first.describe()
    for facts in (key(), key(algorithm="3des-cbc", purpose="signing"), key(algorithm="aes-gcm", usage_total=2**40)):
        assert second.rotation_due(facts) == first.rotation_due(facts)
        assert second.max_age_deadline(facts) == first.max_age_deadline(facts)
        assert second.static_violations(facts) == first.static_violations(facts)


def test_the_demo_networks_keys() -> None:
    """The scripted scenario's legacy keys break the rules they are there to show; the rest are clean."""
    expected = {"legacy-rsa": {"min_key_size"}, "legacy-3des": {"banned_algorithm"}}
    for name, profile in PROFILES.items():
        for size in profile.sizes:
            facts = key(algorithm=profile.algorithm, key_size=size, purpose=profile.purpose)
            assert DEFAULTS.static_violations(facts) == expected.get(name, set()), name
            assert DEFAULTS.rotation_due(facts) is not None and DEFAULTS.max_age_deadline(facts) is not None
