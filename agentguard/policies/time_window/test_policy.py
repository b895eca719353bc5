"""time_window through the real engine, on the gateway's clock (data.wasm.now, UTC)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agentguard.policies._testkit import MONDAY_NOON, erc20, evaluate, wasm_for

SCHEMA = json.loads((Path(__file__).parent / "params_schema.json").read_text())
HOUR = 3600
DAY = 24 * HOUR
OFFICE = {"time_windows": [{"days": [0, 1, 2, 3, 4], "start": "09:00", "end": "17:00"}]}
NIGHT = {"time_windows": [{"days": ["fri"], "start": "22:00", "end": "06:00"}]}


def at(now: int, params: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    intent = erc20(1)
    result = evaluate(
        "time_window", intent, params, wasm_for(intent, now=now), check_schema=bool(params)
    )
    return result.decision, result.reasons


def test_example_params_match_the_schema() -> None:
    for params in (
        OFFICE,
        NIGHT,
        {"time_windows": [{"days": ["Sunday"], "start": "00:00", "end": "24:00"}]},
    ):
        jsonschema.Draft202012Validator(SCHEMA).validate(params)


@pytest.mark.parametrize(
    "window",
    [
        {"days": [7], "start": "09:00", "end": "17:00"},
        {"days": ["someday"], "start": "09:00", "end": "17:00"},
        {"days": [0], "start": "9:00", "end": "17:00"},
        {"days": [0], "start": "24:00", "end": "17:00"},
        {"days": [], "start": "09:00", "end": "17:00"},
    ],
)
def test_schema_refuses_bad_windows(window: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(SCHEMA).validate({"time_windows": [window]})


def test_inside_office_hours_is_allowed() -> None:
    assert at(MONDAY_NOON, OFFICE) == ("allow", ())


def test_start_is_inclusive_and_end_exclusive() -> None:
    nine = MONDAY_NOON - 3 * HOUR
    assert at(nine, OFFICE)[0] == "allow"
    assert at(nine - 60, OFFICE) == (
        "deny",
        ("Monday 08:59 UTC is outside the allowed time_windows",),
    )
    assert at(MONDAY_NOON + 5 * HOUR, OFFICE) == (
        "deny",
        ("Monday 17:00 UTC is outside the allowed time_windows",),
    )


def test_weekend_is_outside_weekday_windows() -> None:
    saturday_noon = MONDAY_NOON + 5 * DAY
    assert at(saturday_noon, OFFICE) == (
        "deny",
        ("Saturday 12:00 UTC is outside the allowed time_windows",),
    )


def test_day_names_in_any_accepted_form() -> None:
    for day in ("mon", "Mon", "monday", "Monday", 0):
        params = {"time_windows": [{"days": [day], "start": "11:00", "end": "13:00"}]}
        assert at(MONDAY_NOON, params)[0] == "allow", day


def test_a_window_past_midnight_belongs_to_its_start_day() -> None:
    friday = MONDAY_NOON + 4 * DAY - 12 * HOUR  # Friday 00:00
    assert at(friday + 23 * HOUR, NIGHT)[0] == "allow"  # Friday 23:00
    assert at(friday + DAY + 5 * HOUR, NIGHT)[0] == "allow"  # Saturday 05:00
    assert at(friday + DAY + 6 * HOUR, NIGHT)[0] == "deny"  # Saturday 06:00
    assert at(friday + 5 * HOUR, NIGHT)[0] == "deny"  # Friday 05:00 belongs to Thursday night


def test_missing_clock_is_denied() -> None:
    intent = erc20(1)
    wasm = wasm_for(intent)
    del wasm["now"]
    assert evaluate("time_window", intent, OFFICE, wasm).reasons == (
        "the gateway sent no clock (data.wasm.now); denied",
    )


def test_without_time_windows_nothing_is_allowed() -> None:
    assert at(MONDAY_NOON, {}) == (
        "deny",
        ("time_window: params has no time_windows, so nothing is allowed",),
    )
