"""Configuration: defaults, file, overrides, validation, and the written default file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from myelin.server.config import Config, ConfigError, build_config, default_config_text
from myelin.server.signingkey import SigningKeyError, load_or_create


def test_defaults_are_the_loopback_trial(tmp_path: Path) -> None:
    config, path = build_config({"data_dir": tmp_path})
    listen = (config.server_name, config.bind_address, config.port)
    assert listen == ("localhost", "127.0.0.1", 8008)
    assert config.registration_open
    assert config.default_room_version == "12"
    assert path == tmp_path / "myelin.yaml"


def test_registration_closed_by_default_for_real_names_and_public_binds() -> None:
    assert not Config(server_name="example.org").registration_open
    assert not Config(bind_address="0.0.0.0").registration_open
    assert Config(server_name="example.org", registration_enabled=True).registration_open
    assert not Config(registration_enabled=False).registration_open
    for text, expected in (("open", True), ("closed", False), ("true", True), ("0", False)):
        config, _ = build_config({"registration_enabled": text, "data_dir": Path("/nonexistent")})
        assert config.registration_open is expected


def test_file_then_overrides(tmp_path: Path) -> None:
    (tmp_path / "myelin.yaml").write_text("server_name: a.test\nport: 9000\nrate_limit: off\n")
    config, _ = build_config({"data_dir": tmp_path, "port": "9100", "server_name": None})
    assert (config.server_name, config.port, config.rate_limit) == ("a.test", 9100, False)


def test_the_written_default_file_reads_back_to_the_same_config(tmp_path: Path) -> None:
    original = Config(server_name="b.test", data_dir=tmp_path, registration_shared_secret="s'\"x")
    (tmp_path / "myelin.yaml").write_text(default_config_text(original))
    loaded, _ = build_config({"data_dir": tmp_path})
    assert loaded == original
    assert "#" in (tmp_path / "myelin.yaml").read_text()


def test_event_log_is_disk_or_a_jetstream_stream(tmp_path: Path) -> None:
    config, _ = build_config({"data_dir": tmp_path})
    assert config.event_log == "disk"
    url = "nats://127.0.0.1:4222/MYELIN_A"
    config, _ = build_config({"data_dir": tmp_path, "event_log": url})
    assert config.event_log == url


@pytest.mark.parametrize(
    "settings",
    [
        {"server_name": "bad name"},
        {"port": 70000},
        {"port": "eighty"},
        {"default_room_version": "3000"},
        {"tls_port": 8448},
        {"log_level": "loud"},
        {"database": "mysql://x"},
        {"event_log": "kafka://x:9092"},
        {"event_log": "nats://127.0.0.1:4222/has.dots"},
        {"event_log": "nats:///no-host"},
        {"bind_address": "localhost"},
        {"rate_limit": "maybe"},
    ],
)
def test_bad_values_are_refused(tmp_path: Path, settings: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        build_config({"data_dir": tmp_path, **settings})


def test_bad_config_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "myelin.yaml").write_text("server_name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        build_config({"data_dir": tmp_path})
    (tmp_path / "myelin.yaml").write_text(yaml.safe_dump({"no_such_key": 1}))
    with pytest.raises(ConfigError, match="unknown configuration key"):
        build_config({"data_dir": tmp_path})
    with pytest.raises(ConfigError, match="does not exist"):
        build_config({}, tmp_path / "missing.yaml")


def test_signing_key_is_created_once_and_bad_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "signing.key"
    first = load_or_create(path)
    assert load_or_create(path).public_key_b64 == first.public_key_b64
    assert path.read_text().startswith(f"ed25519 {first.key_id.split(':')[1]} ")
    path.write_text("ed25519 v1 !!!not-base64\n")
    with pytest.raises(SigningKeyError):
        load_or_create(path)
