"""Server configuration: defaults, the YAML file in the data directory, env vars and options.

Precedence, lowest first: built-in defaults (the embedded trial: `localhost` on
127.0.0.1:8008), the config file (`<data dir>/myelin.yaml`, written with comments on first
start), then `MYELIN_*` environment variables and command-line options (click merges those
two). Every value is checked here, once, so the rest of the server can trust it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from myelin.core.roomversions import KNOWN_ROOM_VERSIONS
from myelin.eventlog.select import EventLogSettingError, check_event_log_setting

CONFIG_FILE_NAME = "myelin.yaml"
_SERVER_NAME = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?$")


class ConfigError(Exception):
    """A configuration value is missing, malformed or contradictory."""


@dataclass(frozen=True, slots=True)
class Config:
    """Everything the server needs to start; one frozen value, checked by `validate`."""

    server_name: str = "localhost"
    data_dir: Path = Path("myelin-data")
    bind_address: str = "127.0.0.1"
    port: int = 8008
    #: Optional TLS listener (client, federation and key APIs on one port, as Sytest wants).
    tls_port: int | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: None means "decide from the setup": open for the trial default, closed otherwise.
    registration_enabled: bool | None = None
    registration_shared_secret: str | None = None
    allow_guest_access: bool = False
    default_room_version: str = "12"
    max_request_body: int = 1024 * 1024
    #: Largest media upload in bytes (media bodies are streamed, not held to max_request_body).
    max_upload_size: int = 50 * 1024 * 1024
    rate_limit: bool = True
    rate_limit_per_second: float = 10.0
    rate_limit_burst: int = 50
    #: "sqlite" (a file in the data directory) or a postgresql:// DSN.
    database: str = "sqlite"
    #: The room event log: "disk" (`<data_dir>/eventlog`) or nats://host:port/STREAM.
    event_log: str = "disk"
    log_level: str = "info"
    #: Public base URL for clients (.well-known); when absent, the scheme and Host header
    #: of the request that asks.
    public_baseurl: str | None = None
    #: Lifetime of access tokens that come with a refresh token, in milliseconds.
    refreshable_token_lifetime_ms: int = 5 * 60 * 1000
    #: Application service registration files (YAML, application-service-api.md).
    app_service_config_files: tuple[Path, ...] = ()
    #: URL previews (GET .../preview_url), which make the server fetch what users name.
    url_preview_enabled: bool = True
    #: IP ranges (CIDR) previews may not connect to; None: loopback, private, link-local,
    #: multicast and other special-purpose ranges (myelin.mediaapi.preview).
    url_preview_ip_range_blacklist: tuple[str, ...] | None = None
    #: IP ranges previews may reach even when blacklisted (e.g. an intranet wiki).
    url_preview_ip_range_whitelist: tuple[str, ...] = ()
    #: Single sign-on through this CAS server (its base URL, e.g. https://sso.example.org/cas);
    #: None: no SSO (myelin.clientapi.sso).
    cas_server_url: str | None = None
    #: Bring back the body-matching mention rules v1.17 removed, for clients that send no
    #: `m.mentions` (myelin.push.defaults).
    push_legacy_mention_rules: bool = False
    #: SMTP relay for the validation e-mails of 3PIDs (.../email/requestToken); None:
    #: this server sends no e-mail, so e-mail registration and adding addresses are off.
    smtp_host: str | None = None
    smtp_port: int = 25
    #: The From address of those e-mails; None: `myelin@<server name host>`.
    smtp_from: str | None = None
    #: Check identity servers' TLS certificates (turn off only for test identity servers).
    identity_server_tls_verify: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def registration_open(self) -> bool:
        """Open on the loopback trial (`localhost`), closed elsewhere unless configured."""
        if self.registration_enabled is not None:
            return self.registration_enabled
        return self.server_name == "localhost" and _is_loopback(self.bind_address)

    @property
    def signing_key_path(self) -> Path:
        return self.data_dir / "signing.key"

    @property
    def database_path(self) -> Path:
        return self.data_dir / "myelin.db"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "log"

    def validate(self) -> Config:
        if not _SERVER_NAME.match(self.server_name) or len(self.server_name) > 230:
            raise ConfigError(f"server_name {self.server_name!r} is not a valid server name")
        for name in ("port", "tls_port", "smtp_port"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 65535:
                raise ConfigError(f"{name} must be between 0 and 65535, not {value}")
        if self.tls_port is not None and (self.tls_cert is None or self.tls_key is None):
            raise ConfigError("tls_port needs both tls_cert and tls_key")
        for name in ("tls_cert", "tls_key"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"{name} {path} is not a readable file")
        if self.default_room_version not in KNOWN_ROOM_VERSIONS:
            raise ConfigError(
                f"default_room_version {self.default_room_version!r} is not one of "
                f"{', '.join(sorted(KNOWN_ROOM_VERSIONS, key=_version_key))}"
            )
        if self.max_request_body < 1024:
            raise ConfigError("max_request_body must be at least 1024 bytes")
        if self.max_upload_size < 1:
            raise ConfigError("max_upload_size must be at least 1 byte")
        if self.rate_limit_per_second <= 0 or self.rate_limit_burst < 1:
            raise ConfigError("rate limits must be positive")
        if self.log_level.lower() not in {"debug", "info", "warning", "error"}:
            raise ConfigError("log_level must be debug, info, warning or error")
        if self.database != "sqlite" and not self.database.startswith(
            ("postgresql://", "postgres://")
        ):
            raise ConfigError("database must be 'sqlite' or a postgresql:// DSN")
        try:
            check_event_log_setting(self.event_log)
        except EventLogSettingError as exc:
            raise ConfigError(str(exc)) from None
        for path in self.app_service_config_files:
            if not Path(path).is_file():
                raise ConfigError(f"app service registration {path} is not a readable file")
        for name in ("url_preview_ip_range_blacklist", "url_preview_ip_range_whitelist"):
            for text in getattr(self, name) or ():
                try:
                    ipaddress.ip_network(text, strict=False)
                except ValueError:
                    raise ConfigError(f"{name}: {text!r} is not a CIDR range") from None
        if self.cas_server_url is not None and not self.cas_server_url.startswith(
            ("https://", "http://")
        ):
            raise ConfigError("cas_server_url must be an http(s):// URL")
        try:
            ipaddress.ip_address(self.bind_address)
        except ValueError:
            raise ConfigError(f"bind_address {self.bind_address!r} is not an IP address") from None
        return self


def _version_key(v: str) -> tuple[int, str]:
    return (int(v), "") if v.isdigit() else (10**6, v)


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


_FIELD_TYPES: dict[str, type] = {
    "server_name": str,
    "data_dir": Path,
    "bind_address": str,
    "port": int,
    "tls_port": int,
    "tls_cert": Path,
    "tls_key": Path,
    "registration_enabled": bool,
    "registration_shared_secret": str,
    "allow_guest_access": bool,
    "default_room_version": str,
    "max_request_body": int,
    "max_upload_size": int,
    "rate_limit": bool,
    "rate_limit_per_second": float,
    "rate_limit_burst": int,
    "database": str,
    "event_log": str,
    "log_level": str,
    "public_baseurl": str,
    "refreshable_token_lifetime_ms": int,
    "app_service_config_files": tuple,
    "url_preview_enabled": bool,
    "url_preview_ip_range_blacklist": list,
    "url_preview_ip_range_whitelist": list,
    "cas_server_url": str,
    "push_legacy_mention_rules": bool,
    "smtp_host": str,
    "smtp_port": int,
    "smtp_from": str,
    "identity_server_tls_verify": bool,
}


def coerce(name: str, value: Any) -> Any:
    """Turn a YAML, env or option value into the field's type, or raise ConfigError."""
    if value is None:
        return None
    kind = _FIELD_TYPES.get(name)
    if kind is None:
        raise ConfigError(f"unknown configuration key {name!r}")
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in {"1", "true", "yes", "on", "open"}:
            return True
        if text in {"0", "false", "no", "off", "closed"}:
            return False
        raise ConfigError(f"{name} must be true or false, not {value!r}")
    if kind is int:
        if isinstance(value, bool):
            raise ConfigError(f"{name} must be an integer")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be an integer, not {value!r}") from None
    if kind is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a number, not {value!r}") from None
    if kind is Path:
        return Path(str(value)).expanduser()
    if kind is list:  # a list of strings: a YAML list, or a comma-separated string (env)
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
            raise ConfigError(f"{name} must be a list of strings")
        return tuple(i.strip() for i in items if i.strip())
    if kind is tuple:  # a list of paths: a YAML list, or a comma-separated string (env)
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
            raise ConfigError(f"{name} must be a list of file paths")
        return tuple(Path(i.strip()).expanduser() for i in items if i.strip())
    if not isinstance(value, str | int):
        raise ConfigError(f"{name} must be a string")
    return str(value)


def read_config_file(path: Path) -> dict[str, Any]:
    """The settings of a YAML config file (an empty file is no settings)."""
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of settings")
    out: dict[str, Any] = {}
    for key, value in loaded.items():
        out[str(key)] = coerce(str(key), value)
    return out


def build_config(overrides: dict[str, Any], config_file: Path | None = None) -> tuple[Config, Path]:
    """Merge defaults, the config file and `overrides` (env/options, None = not given).

    The config file is `config_file` if given, else `<data dir>/myelin.yaml` when it
    exists. Returns the checked config and the path of the config file in force.
    """
    given = {k: coerce(k, v) for k, v in overrides.items() if v is not None}
    data_dir = Path(given.get("data_dir", Config().data_dir))
    path = config_file if config_file is not None else data_dir / CONFIG_FILE_NAME
    from_file: dict[str, Any] = {}
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file {config_file} does not exist")
    if path.is_file():
        from_file = read_config_file(path)
    merged = {**from_file, **given}
    if "data_dir" not in merged:
        merged["data_dir"] = data_dir
    file_dir = from_file.get("data_dir")
    if file_dir is not None and "data_dir" not in given and not file_dir.is_absolute():
        merged["data_dir"] = path.parent / file_dir
    config = replace(Config(), **merged)
    return config.validate(), path


def default_config_text(config: Config) -> str:
    """The commented config file written into a new data directory."""
    reg = "null"
    if config.registration_enabled is not None:
        reg = str(config.registration_enabled).lower()
    secret = config.registration_shared_secret
    return f"""\
# Myelin homeserver configuration. Written on first start; edit and restart to change.
# Every key can also be given as a command-line option of `myelin serve` or as an
# environment variable MYELIN_<KEY> (e.g. MYELIN_SERVER_NAME); those win over this file.

# The name in your user IDs (@alice:<server_name>). It cannot change once users exist.
server_name: {config.server_name}

# Where the client, federation and key APIs listen (plain HTTP).
bind_address: {config.bind_address}
port: {config.port}

# An optional TLS listener for the same APIs: set all three.
tls_port: {_yaml(config.tls_port)}
tls_cert: {_yaml(config.tls_cert)}
tls_key: {_yaml(config.tls_key)}

# Whether anyone may register with POST /register. null: open for the trial default
# (server name localhost on a loopback address), closed for any other server name.
registration_enabled: {reg}
# A secret that lets admins create users with `myelin user create` or the
# /_synapse/admin/v1/register endpoint (HMAC-SHA1). null: that endpoint is off.
registration_shared_secret: {_yaml(secret)}
allow_guest_access: {str(config.allow_guest_access).lower()}

# Room version of new rooms when the client does not ask for one.
default_room_version: "{config.default_room_version}"

# Largest request body accepted, in bytes (larger ones get M_TOO_LARGE).
max_request_body: {config.max_request_body}

# Largest media upload, in bytes (larger ones get M_TOO_LARGE and leave nothing behind).
max_upload_size: {config.max_upload_size}

# Per-client rate limit on login, registration and other expensive endpoints.
rate_limit: {str(config.rate_limit).lower()}
rate_limit_per_second: {config.rate_limit_per_second}
rate_limit_burst: {config.rate_limit_burst}

# "sqlite" keeps everything in this directory; or a postgresql:// DSN.
database: {config.database}

# The room event log, the source of truth every table is rebuilt from: "disk" keeps it
# in <data_dir>/eventlog; nats://host:port/STREAM keeps it in a NATS JetStream stream
# (scale-out; give every homeserver on one NATS its own STREAM).
event_log: {config.event_log}

# debug, info, warning or error. Logs go to log/myelin.log here; warnings also to stderr.
log_level: {config.log_level}

# The URL clients should use, announced in /.well-known/matrix/client. null: the
# scheme and host the client used to ask.
public_baseurl: {_yaml(config.public_baseurl)}

# Application service (bridge, bot) registration files, YAML as the Application
# Service API describes them. As an option or environment variable: comma-separated.
app_service_config_files: {_yaml_list(config.app_service_config_files)}

# URL previews for clients (they make this server fetch the links users post). The
# blacklist (null: loopback, private, link-local, multicast and reserved ranges) and the
# whitelist (wins over it) are lists of CIDR ranges checked on every address connected to.
url_preview_enabled: {str(config.url_preview_enabled).lower()}
url_preview_ip_range_blacklist: {_yaml_opt_list(config.url_preview_ip_range_blacklist)}
url_preview_ip_range_whitelist: {_yaml_opt_list(config.url_preview_ip_range_whitelist)}

# Single sign-on: the base URL of a CAS server (its /login and /proxyValidate are used).
# Register <public_baseurl>/_matrix/client/r0/login/cas/ticket as the service there.
# Users signing in for the first time get an account named after their CAS user name.
cas_server_url: {_yaml(config.cas_server_url)}

# Notify of mentions found in message bodies (the user name, display name, "@room"), as
# servers did before Matrix v1.17, for clients too old to send m.mentions.
push_legacy_mention_rules: {str(config.push_legacy_mention_rules).lower()}

# E-mail: the SMTP relay that carries the validation messages of e-mail addresses
# (registration with an e-mail address, adding one to an account). null: no e-mail, and
# those features are off. smtp_from: the sender (null: myelin@<server name host>).
smtp_host: {_yaml(config.smtp_host)}
smtp_port: {config.smtp_port}
smtp_from: {_yaml(config.smtp_from)}

# Check the TLS certificates of identity servers (3PID lookups, binds, third-party
# invites). Turn off only for a test identity server with a self-signed certificate.
identity_server_tls_verify: {str(config.identity_server_tls_verify).lower()}
"""


def _yaml_list(values: tuple[Path, ...]) -> str:
    return "[" + ", ".join(_yaml(v) for v in values) + "]"


def _yaml_opt_list(values: tuple[str, ...] | None) -> str:
    return "null" if values is None else "[" + ", ".join(_yaml(v) for v in values) + "]"


def _yaml(value: object) -> str:
    if value is None:
        return "null"
    return yaml.safe_dump(str(value), default_style='"').strip()


def config_keys() -> list[str]:
    return [f.name for f in fields(Config) if f.name != "extra"]
