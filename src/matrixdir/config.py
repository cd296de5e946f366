"""XDG paths, the configuration file and stored credentials (docs §8, §11)."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import platformdirs

from matrixdir.errors import EX_CONFIG, MatrixdirError, NotLoggedInError
from matrixdir.fsutil import atomic_write
from matrixdir.layout import encode_name

APP = "matrixdir"


class ConfigError(MatrixdirError):
    exit_code = EX_CONFIG


def config_dir() -> Path:
    return platformdirs.user_config_path(APP)


def data_dir() -> Path:
    return platformdirs.user_data_path(APP)


def default_store() -> Path:
    return data_dir() / "chats"


def load_config(path: str | None = None) -> dict[str, Any]:
    """The configuration file as a dict of option defaults ({} if there is none)."""
    explicit = path or os.environ.get("MATRIXDIR_CONFIG")
    p = Path(explicit) if explicit else config_dir() / "config.toml"
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"configuration file {p} does not exist") from None
        return {}
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: {e}") from None
    return {k.replace("-", "_"): v for k, v in data.items()}


@dataclass(frozen=True)
class Credentials:
    homeserver: str
    user_id: str
    device_id: str
    access_token: str

    def to_json(self) -> bytes:
        return orjson.dumps(self.__dict__, option=orjson.OPT_INDENT_2)


def credentials_path(user_id: str) -> Path:
    return config_dir() / "credentials" / f"{encode_name(user_id)}.json"


def crypto_dir(user_id: str) -> Path:
    return data_dir() / "crypto" / encode_name(user_id)


def save_credentials(creds: Credentials) -> Path:
    """Write credentials readable by the owner only (0600 file in a 0700 directory)."""
    path = credentials_path(creds.user_id)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    atomic_write(path, creds.to_json(), mode=0o600)
    return path


def load_credentials(user_id: str | None) -> Credentials:
    """Credentials of `user_id`, or of the only stored account when user_id is None."""
    if user_id:
        path = credentials_path(user_id)
    else:
        found = sorted((config_dir() / "credentials").glob("*.json"))
        if len(found) != 1:
            raise NotLoggedInError(
                "not logged in: run `matrixdir login`"
                if not found
                else "several accounts are logged in: pass --user"
            )
        path = found[0]
    try:
        data = orjson.loads(path.read_bytes())
        return Credentials(
            str(data["homeserver"]),
            str(data["user_id"]),
            str(data["device_id"]),
            str(data["access_token"]),
        )
    except FileNotFoundError:
        raise NotLoggedInError(f"{user_id} is not logged in: run `matrixdir login`") from None
    except (orjson.JSONDecodeError, KeyError) as e:
        raise ConfigError(f"{path}: unreadable credentials ({e})") from None
