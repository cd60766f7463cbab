"""``exporter.expiry_horizon_days``: how far ahead a key's expiry makes it a per-key series.

Beyond the horizon a key is only counted (``keylife_keys_by_expiry_band``); docs/metrics.md,
*Per-key series*, names that blind spot. Checked on what a scrape serves, for ``keylife serve``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from keylife.config import ExporterConfig
from tests.server import live_server
from tests.test_exporter import at, key, post, scrape, value

EXPIRY = "keylife_key_expiry_timestamp_seconds"


def _expiring(samples: dict) -> set[str]:
    return {dict(labels)["key_id"] for name, labels in samples if name == EXPIRY}


@pytest.mark.parametrize(("horizon", "served"), [(None, {"k-20d"}), (7, set()), (90, {"k-20d", "k-60d"})])
def test_the_horizon_decides_which_expiries_are_served(tmp_path: Path, horizon: int | None, served: set) -> None:
    exporter = {} if horizon is None else {"expiry_horizon_days": horizon}  # None: the default, 30 days
    with live_server(tmp_path, exporter=exporter) as live:
        post(live, *key(1, "k-20d", expires_at=at(20)), *key(2, "k-60d", expires_at=at(60)))
        s = scrape(live)
        assert _expiring(s) == served
        assert value(s, "keylife_keys_attention") == len(served)
        assert value(s, "keylife_keys_by_expiry_band", band="30d") == 1  # counted whatever the horizon
        assert value(s, "keylife_keys_by_expiry_band", band="90d") == 1


def test_the_horizon_is_bounded() -> None:
    assert ExporterConfig().expiry_horizon_days == 30
    for wrong in (0, 3651):
        with pytest.raises(ValidationError):
            ExporterConfig(expiry_horizon_days=wrong)


def test_the_blind_spot_is_documented_next_to_certificate_exporters() -> None:
    text = (Path(__file__).parents[1] / "docs" / "metrics.md").read_text()
    section = text[text.index("### Per-key series") :]
    for needle in ("exporter.expiry_horizon_days", "exporter.attention_cap", "x509_cert_not_after",
                   "certmanager_certificate_expiration_timestamp_seconds", "keylife_keys_by_expiry_band"):  # fmt: skip
        assert needle in section, needle
