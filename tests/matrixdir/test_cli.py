"""The `matrixdir` command line: help, exit codes, configuration file and environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from matrixdir.cli import main
from matrixdir.layout import room_dir_name
from matrixdir.writer import StoreWriter

ROOM = "!r:example.org"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "MATRIXDIR_CONFIG": "",
        "MATRIXDIR_STORE": "",
    }


def run(env: dict[str, str], *args: str, input: str | None = None) -> tuple[int, str]:
    clean = {k: (v or None) for k, v in env.items()}
    result = CliRunner().invoke(main, list(args), env=clean, input=input)
    return result.exit_code, result.output


def make_store(path: Path) -> None:
    with StoreWriter(path) as w:
        w.append_live(
            ROOM,
            [{"event_id": "$1", "type": "m.room.message", "origin_server_ts": 5, "content": {}}],
        )


@pytest.mark.parametrize("command", [[], ["login"], ["sync"], ["send"], ["view"], ["check"]])
def test_help_everywhere(env: dict[str, str], command: list[str]) -> None:
    code, out = run(env, *command, "--help")
    assert code == 0
    assert "Usage:" in out


def test_check_exit_codes(env: dict[str, str], tmp_path: Path) -> None:
    assert run(env, "check", "--store", str(tmp_path / "none"))[0] == 66
    store = tmp_path / "chats"
    make_store(store)
    code, out = run(env, "check", "--store", str(store))
    assert code == 0, out
    path = store / room_dir_name(ROOM) / "5-events.jsonl"
    with open(path, "ab") as f:
        f.write(b'[1, 2]\n{"torn')
    code, out = run(env, "check", "--store", str(store))
    assert code == 65
    assert "not a JSON object" in out and "torn" in out
    with StoreWriter(store):
        assert run(env, "check", "--repair", "--store", str(store))[0] == 75
    code, out = run(env, "check", "--repair", "--store", str(store))
    assert code == 65 and "repaired" in out
    assert path.read_bytes().endswith(b"[1, 2]\n")


def test_config_file_then_environment_then_command_line(
    env: dict[str, str], tmp_path: Path
) -> None:
    good, other = tmp_path / "good", tmp_path / "other"
    make_store(good)
    conf = tmp_path / "matrixdir.toml"
    conf.write_text(f'store = "{good}"\n')
    code, out = run({**env, "MATRIXDIR_CONFIG": str(conf)}, "check")
    assert code == 0, out  # the store came from the file
    code, _ = run({**env, "MATRIXDIR_CONFIG": str(conf), "MATRIXDIR_STORE": str(other)}, "check")
    assert code == 66  # the environment beats the file
    code, _ = run(
        {**env, "MATRIXDIR_CONFIG": str(conf), "MATRIXDIR_STORE": str(other)},
        "check",
        "--store",
        str(good),
    )
    assert code == 0  # the command line beats both
    # The default file lives under XDG_CONFIG_HOME.
    default = Path(env["XDG_CONFIG_HOME"]) / "matrixdir" / "config.toml"
    default.parent.mkdir(parents=True)
    default.write_text(f'store = "{good}"\n')
    assert run(env, "check")[0] == 0
    default.write_text("store = [")
    code, out = run(env, "check")
    assert code == 78 and "config.toml" in out
    assert run({**env, "MATRIXDIR_CONFIG": str(tmp_path / "missing.toml")}, "check")[0] == 78


def test_send_needs_login_and_valid_input(env: dict[str, str], tmp_path: Path) -> None:
    code, out = run(env, "send", "--store", str(tmp_path), "--room", ROOM, input="x")
    assert code == 78 and "not logged in" in out
    assert not (tmp_path / "outbox" / "new").exists()


def test_view_without_store_is_a_usage_error(env: dict[str, str], tmp_path: Path) -> None:
    code, out = run(env, "view", "--store", str(tmp_path / "none"))
    assert code == 2 and "no store" in out
