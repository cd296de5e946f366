"""Room versions as data: the flags follow the per-version documents of the spec."""

import pytest

from myelin.core.roomversions import (
    DEFAULT_ROOM_VERSION,
    EventFormat,
    RedactionRules,
    StateResolution,
    UnsupportedRoomVersion,
    room_version,
)


def test_every_version_from_1_to_12_is_known() -> None:
    for n in range(1, 13):
        assert room_version(str(n)).identifier == str(n)


def test_unknown_version_is_refused() -> None:
    with pytest.raises(UnsupportedRoomVersion):
        room_version("13")


@pytest.mark.parametrize(
    ("version", "fmt", "res", "redaction"),
    [
        ("1", EventFormat.V1, StateResolution.V1, RedactionRules.V1),
        ("2", EventFormat.V1, StateResolution.V2, RedactionRules.V1),
        ("3", EventFormat.V2, StateResolution.V2, RedactionRules.V1),
        ("4", EventFormat.V3, StateResolution.V2, RedactionRules.V1),
        ("6", EventFormat.V3, StateResolution.V2, RedactionRules.V6),
        ("8", EventFormat.V3, StateResolution.V2, RedactionRules.V8),
        ("9", EventFormat.V3, StateResolution.V2, RedactionRules.V9),
        ("11", EventFormat.V3, StateResolution.V2, RedactionRules.V11),
        ("12", EventFormat.V4, StateResolution.V2_1, RedactionRules.V11),
    ],
)
def test_algorithms_per_version(
    version: str, fmt: EventFormat, res: StateResolution, redaction: RedactionRules
) -> None:
    v = room_version(version)
    assert (v.event_format, v.state_resolution, v.redaction) == (fmt, res, redaction)


def test_feature_boundaries() -> None:
    assert not room_version("6").knock_join_rule and room_version("7").knock_join_rule
    assert not room_version("7").restricted_join_rule and room_version("8").restricted_join_rule
    assert room_version("10").integer_only_power_levels
    assert not room_version("9").integer_only_power_levels
    assert room_version("5").special_case_aliases_auth
    assert not room_version("6").special_case_aliases_auth
    assert room_version("12").privileged_creators and not room_version("11").privileged_creators


def test_default_is_twelve() -> None:
    assert DEFAULT_ROOM_VERSION.identifier == "12"
