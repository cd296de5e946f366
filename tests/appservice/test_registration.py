"""Registration files (application-service-api.md "Registration") and the config setting
that lists them: what is accepted, what is refused and why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from myelin.appservice.registration import (
    RegistrationError,
    load_registrations,
    parse_registration,
)
from myelin.server.config import ConfigError, build_config

BASE: dict[str, Any] = {
    "id": "IRC Bridge",
    "url": "http://127.0.0.1:1234/",
    "as_token": "a" * 16,
    "hs_token": "h" * 16,
    "sender_localpart": "_irc_bot",
    "namespaces": {
        "users": [{"exclusive": True, "regex": "@_irc_bridge_.*"}],
        "aliases": [{"exclusive": False, "regex": "#_irc_bridge_.*"}],
        "rooms": [],
    },
}


def test_spec_example_parses_and_matches() -> None:
    service = parse_registration(BASE, "example.org")
    assert service.sender == "@_irc_bot:example.org"
    assert service.url == "http://127.0.0.1:1234"  # no trailing slash: paths are appended
    assert service.is_exclusive_user("@_irc_bridge_alice:example.org")
    assert service.is_exclusive_user("@_irc_bot:example.org")
    assert not service.is_user_in_namespace("@alice:example.org")
    assert service.is_alias_in_namespace("#_irc_bridge_chan:example.org")
    assert not service.is_exclusive_alias("#_irc_bridge_chan:example.org")
    assert service.rate_limited and not service.receive_ephemeral


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"hs_token": None}, "hs_token"),
        ({"sender_localpart": ""}, "sender_localpart"),
        ({"url": 5}, "url"),
        ({"namespaces": {"users": [{"regex": "("}]}}, "bad regex"),
        ({"namespaces": {"users": [{"regex": "@a", "exclusive": "yes"}]}}, "exclusive"),
        ({"namespaces": {"users": "@a"}}, "must be a list"),
        ({"protocols": "irc"}, "protocols"),
    ],
)
def test_malformed_registrations_are_refused(change: dict[str, Any], complaint: str) -> None:
    with pytest.raises(RegistrationError, match=complaint):
        parse_registration({**BASE, **change}, "example.org")


def test_ids_and_tokens_must_be_unique(tmp_path: Path) -> None:
    first = tmp_path / "one.yaml"
    first.write_text(yaml.safe_dump(BASE))
    second = tmp_path / "two.yaml"
    second.write_text(yaml.safe_dump({**BASE, "id": "other"}))
    with pytest.raises(RegistrationError, match="as_token"):
        load_registrations([first, second], "example.org")
    second.write_text(yaml.safe_dump({**BASE, "as_token": "b" * 16}))
    with pytest.raises(RegistrationError, match="id"):
        load_registrations([first, second], "example.org")
    second.write_text(yaml.safe_dump({**BASE, "id": "other", "as_token": "b" * 16}))
    assert [s.id for s in load_registrations([first, second], "example.org")] == [
        "IRC Bridge",
        "other",
    ]


def test_config_setting(tmp_path: Path) -> None:
    reg = tmp_path / "irc.yaml"
    reg.write_text(yaml.safe_dump(BASE))
    config, _ = build_config(
        {"data_dir": str(tmp_path), "app_service_config_files": f"{reg}, {reg}"}
    )
    assert config.app_service_config_files == (reg, reg)
    with pytest.raises(ConfigError, match="not a readable file"):
        build_config({"data_dir": str(tmp_path), "app_service_config_files": "/nonexistent.yaml"})
