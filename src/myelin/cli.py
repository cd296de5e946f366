"""`myelin`: the homeserver's command line (serve, rebuild, user ...)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from myelin import __version__

# Every `myelin serve` setting: (option name, config key, click type, help). Each is also
# read from the environment as MYELIN_<KEY>, and from the config file.
_SETTINGS: list[tuple[str, str, Any, str]] = [
    ("--server-name", "server_name", str, "Server name in user IDs [localhost]"),
    ("--data-dir", "data_dir", click.Path(path_type=Path), "Data directory [./myelin-data]"),
    ("--bind", "bind_address", str, "Address to listen on [127.0.0.1]"),
    ("--port", "port", int, "HTTP port for client, federation and key APIs [8008]"),
    ("--tls-port", "tls_port", int, "Also listen with TLS on this port"),
    ("--tls-cert", "tls_cert", click.Path(path_type=Path), "TLS certificate chain (PEM)"),
    ("--tls-key", "tls_key", click.Path(path_type=Path), "TLS private key (PEM)"),
    (
        "--registration",
        "registration_enabled",
        click.Choice(["open", "closed"]),
        "Open or close registration [open only for localhost on loopback]",
    ),
    (
        "--refreshable-token-lifetime-ms",
        "refreshable_token_lifetime_ms",
        int,
        "Lifetime of access tokens issued with a refresh token [300000]",
    ),
    (
        "--registration-shared-secret",
        "registration_shared_secret",
        str,
        "Secret for admin registration (myelin user create, /_synapse/admin/v1/register)",
    ),
    ("--allow-guests/--no-guests", "allow_guest_access", None, "Allow guest accounts"),
    ("--default-room-version", "default_room_version", str, "Room version of new rooms [12]"),
    ("--max-request-body", "max_request_body", int, "Largest request body in bytes"),
    ("--max-upload-size", "max_upload_size", int, "Largest media upload in bytes [52428800]"),
    ("--rate-limit/--no-rate-limit", "rate_limit", None, "Rate-limit login and registration"),
    ("--rate-limit-per-second", "rate_limit_per_second", float, "Sustained requests/s [10]"),
    ("--rate-limit-burst", "rate_limit_burst", int, "Requests allowed in a burst [50]"),
    ("--database", "database", str, "'sqlite' (in the data dir) or a postgresql:// DSN"),
    ("--event-log", "event_log", str, "'disk' (in the data dir) or nats://host:port/STREAM"),
    (
        "--log-level",
        "log_level",
        click.Choice(["debug", "info", "warning", "error"]),
        "Log level of log/myelin.log [info]",
    ),
    ("--public-baseurl", "public_baseurl", str, "Client-facing URL for .well-known"),
    (
        "--app-service-config-files",
        "app_service_config_files",
        str,
        "Application service registration files (YAML), comma-separated",
    ),
    ("--url-preview/--no-url-preview", "url_preview_enabled", None, "Serve URL previews [on]"),
    (
        "--url-preview-ip-range-blacklist",
        "url_preview_ip_range_blacklist",
        str,
        "CIDR ranges URL previews may not reach, comma-separated [special-purpose ranges]",
    ),
    (
        "--url-preview-ip-range-whitelist",
        "url_preview_ip_range_whitelist",
        str,
        "CIDR ranges URL previews may reach despite the blacklist, comma-separated",
    ),
    ("--cas-server-url", "cas_server_url", str, "Single sign-on through this CAS server"),
    (
        "--push-legacy-mention-rules/--no-push-legacy-mention-rules",
        "push_legacy_mention_rules",
        None,
        "Notify of mentions in message bodies, as before Matrix v1.17 [off]",
    ),
    ("--smtp-host", "smtp_host", str, "SMTP relay for 3PID validation e-mails [none: no e-mail]"),
    ("--smtp-port", "smtp_port", int, "Port of the SMTP relay [25]"),
    ("--smtp-from", "smtp_from", str, "From address of e-mails [myelin@<server name>]"),
    (
        "--identity-server-tls-verify/--no-identity-server-tls-verify",
        "identity_server_tls_verify",
        None,
        "Check identity servers' TLS certificates [on]",
    ),
]


def _server_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for option, key, kind, help_text in reversed(_SETTINGS):
        extra: dict[str, Any] = {"default": None, "help": help_text}
        if kind is not None:
            extra["type"] = kind
        fn = click.option(option, key, envvar=f"MYELIN_{key.upper()}", **extra)(fn)
    fn = click.option(
        "--config",
        "config_file",
        type=click.Path(path_type=Path),
        envvar="MYELIN_CONFIG",
        default=None,
        help="YAML config file [<data dir>/myelin.yaml]",
    )(fn)
    return fn


def _load_config(config_file: Path | None, settings: dict[str, Any]) -> Any:
    from myelin.server.config import ConfigError, build_config

    try:
        config, _ = build_config(settings, config_file)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    return config


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="myelin")
def main() -> None:
    """Myelin, a Matrix homeserver on append-only event logs."""


@main.command()
@_server_options
def serve(config_file: Path | None, **settings: Any) -> None:
    """Start the homeserver (default: localhost on 127.0.0.1:8008, data in ./myelin-data).

    Every option can also be set as an environment variable MYELIN_<NAME> (for example
    MYELIN_SERVER_NAME) or in the config file written into the data directory on first
    start. Stop with Ctrl-C or SIGTERM; requests in flight are finished first.
    """
    from myelin.eventlog import LogUnavailableError
    from myelin.server.main import StartupError
    from myelin.server.main import serve as run_server
    from myelin.server.signingkey import SigningKeyError
    from myelin.storage import StorageError
    from myelin.userapi.accounts import ServerNameMismatch

    config = _load_config(config_file, settings)
    expected = (
        StartupError,
        SigningKeyError,
        StorageError,
        ServerNameMismatch,
        LogUnavailableError,
        OSError,
    )
    try:
        asyncio.run(run_server(config))
    except expected as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:  # Ctrl-C before the server's own handler is installed
        raise SystemExit(130) from None
    except ExceptionGroup as group:
        # Components own task groups, so a startup failure may arrive wrapped (nested).
        known = group.subgroup(lambda e: isinstance(e, expected))
        if known is None:
            raise
        first: BaseException = known
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise click.ClickException(str(first)) from None


@main.group()
def user() -> None:
    """Manage user accounts."""


@user.command("create")
@click.argument("localpart")
@click.option(
    "--password",
    prompt=True,
    hide_input=True,
    confirmation_prompt=True,
    envvar="MYELIN_NEW_USER_PASSWORD",
    help="Password (prompted when absent)",
)
@click.option("--admin", is_flag=True, help="Make the user a server admin")
@click.option(
    "--url",
    default=None,
    envvar="MYELIN_URL",
    help="Register through this running server with the shared secret instead "
    "of writing the database (e.g. http://127.0.0.1:8008)",
)
@_server_options
def user_create(
    localpart: str,
    password: str,
    admin: bool,
    url: str | None,
    config_file: Path | None,
    **settings: Any,
) -> None:
    """Create the account @LOCALPART:<server name>.

    By default the account is written straight into the database of the data directory
    (works whether or not registration is open, and whether or not the server runs). With
    --url it goes through /_synapse/admin/v1/register of a running server instead, signed
    with `registration_shared_secret` (from --registration-shared-secret or the config).
    """
    config = _load_config(config_file, settings)
    if url is not None:
        if not config.registration_shared_secret:
            raise click.UsageError("--url needs registration_shared_secret (option or config)")
        user_id = _register_over_http(
            url, config.registration_shared_secret, localpart, password, admin
        )
    else:
        user_id = asyncio.run(_create_user(config, localpart, password, admin))
    click.echo(f"created {user_id}{' (admin)' if admin else ''}")


def _register_over_http(url: str, secret: str, localpart: str, password: str, admin: bool) -> str:
    import json
    import urllib.error
    import urllib.request

    from myelin.clientapi.discovery import shared_secret_mac

    endpoint = url.rstrip("/") + "/_synapse/admin/v1/register"

    def call(data: dict[str, Any] | None) -> dict[str, Any]:
        body = json.dumps(data).encode() if data is not None else None
        request = urllib.request.Request(
            endpoint, data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                answer: dict[str, Any] = json.loads(resp.read())
                return answer
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise click.ClickException(f"{endpoint}: HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise click.ClickException(f"{endpoint}: {exc}") from None

    nonce = call(None)["nonce"]
    mac = shared_secret_mac(secret, nonce, localpart, password, admin)
    result = call(
        {"nonce": nonce, "username": localpart, "password": password, "admin": admin, "mac": mac}
    )
    return str(result["user_id"])


async def _create_user(config: Any, localpart: str, password: str, admin: bool) -> str:
    from myelin.server.main import database_url, prepare_data_dir
    from myelin.storage import open_database
    from myelin.userapi.accounts import ServerNameMismatch, UserAPI, UserAPIError

    prepare_data_dir(config)
    async with await open_database(database_url(config)) as db:
        try:
            users = await UserAPI.open(db, config.server_name)
        except ServerNameMismatch as exc:
            raise click.ClickException(str(exc)) from None
        try:
            user_id = users.check_new_localpart(localpart)
            await users.create_account(user_id, password, is_admin=admin)
        except UserAPIError as exc:
            raise click.ClickException(f"{exc.errcode}: {exc.error}") from None
    return user_id


@main.command()
@_server_options
def rebuild(config_file: Path | None, **settings: Any) -> None:
    """Drop every projection and replay the room event log (run with the server stopped).

    Afterwards every query answers exactly as before.
    """
    config = _load_config(config_file, settings)
    count = asyncio.run(_rebuild(config))
    click.echo(f"rebuilt from {count} log records")


async def _rebuild(config: Any) -> int:
    from myelin.eventlog.select import open_event_log
    from myelin.roomserver.rebuild import rebuild as rebuild_roomserver
    from myelin.server.main import database_url
    from myelin.storage import open_database
    from myelin.syncapi.rebuild import rebuild as rebuild_syncapi

    async with (
        await open_database(database_url(config)) as db,
        open_event_log(config.event_log, config.data_dir) as log,
    ):
        head = await log.head()
        with click.progressbar(length=head, label="replaying the room event log") as bar:
            done = 0

            def progress(offset: int, _head: int) -> None:
                nonlocal done
                bar.update(offset - done)
                done = offset

            count = await rebuild_roomserver(db, log, progress)
        # The sync API is the other reader with projections of the log (timelines,
        # memberships, relations, the search index); it replays the same records.
        click.echo("replaying the room event log into the sync projections ...")
        await rebuild_syncapi(db, log)
        return count
