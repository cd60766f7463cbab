"""orjson with sorted keys is byte-identical to the RFC 8785 reference on every event we admit."""

from __future__ import annotations

import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from keylife.common.canonical import canonical, check_canonical_safe
from keylife.domain.events import Event

ident = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,30}", fullmatch=True)
any_text = st.text(min_size=1, max_size=80)  # every code point: controls, quotes, emoji, surrogates-free
when = st.datetimes(timezones=st.just(__import__("datetime").UTC))

events = st.builds(
    lambda i, k, t, node, reason, usage, attrs, n: Event.model_validate(
        {
            "id": i,
            "type": "usage_report",
            "key_id": k,
            "occurred_at": t,
            "node": node,
            "reason": reason,
            "usage": usage,
            "attributes": attrs,
            "key_size": n,
        }
    ),
    ident,
    ident,
    when,
    ident,
    any_text,
    st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True), st.integers(0, 2**53 - 1), min_size=1, max_size=5
    ),
    st.dictionaries(st.from_regex(r"[a-z][a-z0-9_.]{0,10}", fullmatch=True), st.text(max_size=40), max_size=5),
    st.integers(1, 65536),
)


@settings(max_examples=400, deadline=None)
@given(event=events, seq=st.integers(0, 2**53 - 1))
def test_orjson_matches_rfc8785_on_generated_entries(event: Event, seq: int) -> None:
    entry = {"event": event.payload(), "observed_at": "2026-11-28T12:00:00.000001Z", "seq": seq}
    check_canonical_safe(entry)
    assert canonical(entry) == rfc8785.dumps(entry)


def test_values_it_could_get_wrong_are_refused() -> None:
    import pytest

    for bad in ({"x": 1.5}, {"x": 2**60}, {"é": 1}):
        with pytest.raises(ValueError):
            check_canonical_safe(bad)


@settings(max_examples=200, deadline=None)
@given(event=events)
def test_fast_payload_equals_pydantic_dump(event: Event) -> None:
    assert event.payload() == event.model_dump(mode="json", exclude_none=True, exclude_defaults=True)


def test_times_with_offsets_are_stored_in_utc() -> None:
    event = Event.model_validate(
        {
            "id": "x",
            "type": "expired",
            "key_id": "k",
            "occurred_at": "2026-11-28T12:00:00.25+02:00",
            "expires_at": "2026-11-28T09:00:00-05:00",
        }
    )
    assert event.payload()["occurred_at"] == "2026-11-28T10:00:00.250000Z"
    assert event.payload()["expires_at"] == "2026-11-28T14:00:00Z"
