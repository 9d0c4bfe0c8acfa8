"""Notification preferences through the API: one's own only, with defaults, and the rules that
security notices cannot be turned off."""

from __future__ import annotations

from tests.notify_support import recipient
from tests.support import bearer, problem


def test_preferences_start_from_defaults_and_change_piece_by_piece(stack):
    api = bearer(stack, recipient(stack))
    first = api.get("/notifications/preferences")
    assert first.status_code == 200, first.text
    body = first.json()
    assert (body["locale"], body["timeZone"], body["quietHours"]) == ("en", "UTC", None)
    assert all(all(on.values()) for on in body["channels"].values())

    changed = api.request(
        "PUT",
        "/notifications/preferences",
        json={
            "locale": "tr-TR",
            "timeZone": "Europe/Istanbul",
            "quietHours": {"start": "22:30", "end": "07:00"},
            "channels": {"payments": {"sms": False, "push": False}},
        },
    )
    assert changed.status_code == 200, changed.text
    after = changed.json()
    assert (after["locale"], after["timeZone"]) == ("tr", "Europe/Istanbul")
    assert after["quietHours"] == {"start": "22:30", "end": "07:00"}
    assert after["channels"]["payments"] == {"email": True, "sms": False, "push": False}

    kept = api.request("PUT", "/notifications/preferences", json={"locale": "en"}).json()
    assert kept["quietHours"] == {"start": "22:30", "end": "07:00"}  # left out: kept
    assert kept["channels"]["payments"]["push"] is False
    off = api.request("PUT", "/notifications/preferences", json={"quietHours": None}).json()
    assert off["quietHours"] is None


def test_security_notices_cannot_be_turned_off_and_bad_values_are_refused(stack):
    api = bearer(stack, recipient(stack))
    for body, code in [
        ({"channels": {"security": {"email": False}}}, "category_always_sent"),
        ({"channels": {"account": {"push": False}}}, "category_always_sent"),
        ({"timeZone": "Mars/Olympus"}, "unknown_time_zone"),
        ({"quietHours": {"start": "25:00", "end": "07:00"}}, "validation_failed"),
        ({"channels": {"payments": {"fax": False}}}, "validation_failed"),
        ({"locale": "klingon"}, "validation_failed"),
    ]:
        problem(api.request("PUT", "/notifications/preferences", json=body), 400, code)
    assert api.get("/notifications/preferences").json()["timeZone"] == "UTC"


def test_preferences_need_a_sign_in(stack):
    import requests

    response = requests.get(f"{stack.gateway_url}/notifications/preferences", timeout=30)
    problem(response, 401)
