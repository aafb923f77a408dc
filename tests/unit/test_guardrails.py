from __future__ import annotations

from datetime import datetime

import pytest

from stream.domain.guardrails import HOUR_MS, Cap, QuietHours, capped, in_holdout, stacked


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def test_holdout_is_deterministic_and_close_to_its_share() -> None:
    users = [f"user-{i}" for i in range(20_000)]
    held = [u for u in users if in_holdout(u, "rules-v1", 0.10)]
    assert 0.09 < len(held) / len(users) < 0.11
    assert held == [u for u in users if in_holdout(u, "rules-v1", 0.10)]
    other_salt = {u for u in users if in_holdout(u, "rules-v2", 0.10)}
    assert 0.05 < len(other_salt & set(held)) / len(held) < 0.15  # a new salt reshuffles
    assert not any(in_holdout(u, "s", 0.0) for u in users[:100])


@pytest.mark.parametrize(
    ("at", "timezone", "release"),
    [
        ("2026-11-25T23:30:00+00:00", "UTC", "2026-11-26T08:00:00+00:00"),
        ("2026-11-25T03:00:00+00:00", "UTC", "2026-11-25T08:00:00+00:00"),
        ("2026-11-25T12:00:00+00:00", "UTC", None),
        # 15:00 UTC is 23:00 in Shanghai: quiet until 08:00 local = 00:00 UTC
        ("2026-11-25T15:00:00+00:00", "Asia/Shanghai", "2026-11-26T00:00:00+00:00"),
        ("2026-11-25T15:00:00+00:00", "Not/AZone", None),  # unknown zone: the default (UTC)
    ],
)
def test_quiet_hours_defer_to_the_end_of_the_window(
    at: str, timezone: str, release: str | None
) -> None:
    quiet = QuietHours(22, 8)
    got = quiet.release_ms(ms(at), timezone)
    assert got == (ms(release) if release else None)


def test_quiet_hours_within_one_day() -> None:
    quiet = QuietHours(12, 14)
    assert quiet.release_ms(ms("2026-11-25T13:10:00+00:00"), None) == ms(
        "2026-11-25T14:00:00+00:00"
    )
    assert quiet.release_ms(ms("2026-11-25T14:00:00+00:00"), None) is None


def test_caps_count_interventions_in_a_rolling_window_of_event_time() -> None:
    caps = [
        Cap(limit=1, window_ms=24 * HOUR_MS, pattern="cart_stall"),
        Cap(limit=3, window_ms=7 * 24 * HOUR_MS),
    ]
    t = ms("2026-11-25T12:00:00+00:00")
    history = [(t - 30 * HOUR_MS, "cart_stall"), (t - 2 * HOUR_MS, "payment_stall")]
    assert capped(history, "cart_stall", t, caps) is None  # the cart stall was 30 h ago
    history.append((t - HOUR_MS, "cart_stall"))
    assert capped(history, "cart_stall", t, caps) == caps[0]
    assert capped(history, "unpaid_order", t, caps) == caps[1]  # 3 in the last 7 days
    assert capped(history, "unpaid_order", t + 8 * 24 * HOUR_MS, caps) is None


def test_no_stacking_while_an_offer_for_the_same_order_is_active() -> None:
    t = ms("2026-11-25T12:00:00+00:00")
    active = [("order:o1", t + HOUR_MS), ("journey", t - 1)]
    assert stacked(active, "order:o1", t)
    assert not stacked(active, "order:o1", t + HOUR_MS)  # expired
    assert not stacked(active, "journey", t)
    assert not stacked(active, "order:o2", t)
