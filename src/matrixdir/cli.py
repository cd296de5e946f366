"""`matrixdir`: sync, view, send and check a matrixdir chat store.

Options come from the command line, then `MATRIXDIR_*` environment variables, then the
configuration file (docs §11). Errors exit with sysexits codes.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from matrixdir import __version__
from matrixdir.errors import EX_TEMPFAIL, EX_USAGE, MatrixdirError

T = TypeVar("T")


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _fail(e: MatrixdirError) -> None:
    click.echo(f"matrixdir: {e}", err=True)
    sys.exit(e.exit_code)


def _guard(fn: Callable[..., None]) -> Callable[..., None]:
    """Report our typed errors as one line and their sysexits code."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except MatrixdirError as e:
            _fail(e)

    return wrapper


def _default_store() -> str:
    from matrixdir.config import default_store

    return str(default_store())


store_option = click.option(
    "--store",
    "-s",
    envvar="MATRIXDIR_STORE",
    default=_default_store,
    show_default="$XDG_DATA_HOME/matrixdir/chats",
    type=click.Path(file_okay=False, path_type=Path),
    help="The store directory (chats/).",
)
user_option = click.option(
    "--user", "-u", envvar="MATRIXDIR_USER", help="Matrix user ID (when several are logged in)."
)

COMMANDS = ("login", "sync", "send", "view", "check")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="matrixdir")
@click.option(
    "--config",
    envvar="MATRIXDIR_CONFIG",
    type=click.Path(dir_okay=False),
    help="Configuration file [default: $XDG_CONFIG_HOME/matrixdir/config.toml].",
)
@click.option("--verbose", "-v", is_flag=True, help="Log what the agents do.")
@click.pass_context
def main(ctx: click.Context, config: str | None, verbose: bool) -> None:
    """A maildir-like store of Matrix chats as plain JSON-lines files."""
    from matrixdir.config import load_config

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="matrixdir: %(message)s",
    )
    if not verbose:
        logging.getLogger("nio").setLevel(logging.ERROR)
        logging.getLogger("peewee").setLevel(logging.ERROR)
    try:
        cfg = load_config(config)
    except MatrixdirError as e:
        _fail(e)
        return
    ctx.default_map = {name: dict(cfg) for name in COMMANDS}


@main.command()
@click.option("--homeserver", envvar="MATRIXDIR_HOMESERVER", required=True, help="Base URL.")
@user_option
@click.option("--password", envvar="MATRIXDIR_PASSWORD", help="Password (or MATRIXDIR_PASSWORD).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--access-token", envvar="MATRIXDIR_ACCESS_TOKEN", help="Use an existing token.")
@click.option("--device-name", default="matrixdir", show_default=True)
@_guard
def login(
    homeserver: str,
    user: str | None,
    password: str | None,
    password_stdin: bool,
    access_token: str | None,
    device_name: str,
) -> None:
    """Log in and store the credentials (mode 0600) under $XDG_CONFIG_HOME/matrixdir."""
    from matrixdir.client import login as do_login
    from matrixdir.config import credentials_path

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    if not access_token and (not user or password is None):
        raise click.UsageError("give --user and a password, or --access-token")
    creds = _run(
        do_login(
            homeserver,
            user or "",
            password=password,
            access_token=access_token,
            device_name=device_name,
        )
    )
    click.echo(f"logged in as {creds.user_id} (device {creds.device_id})")
    click.echo(f"credentials: {credentials_path(creds.user_id)}", err=True)


@main.command()
@store_option
@user_option
@click.option("--once", is_flag=True, help="One sync round (and back-fill), then exit.")
@click.option("--backfill/--no-backfill", default=True, show_default=True, help="Fetch history.")
@click.option("--rooms", help="Comma-separated room IDs to store (default: every room).")
@click.option(
    "--import-keys", type=click.Path(dir_okay=False, exists=True), help="Element key export."
)
@click.option(
    "--passphrase", envvar="MATRIXDIR_KEY_PASSPHRASE", help="Passphrase of --import-keys."
)
@click.option("--page-size", default=100, show_default=True, type=click.IntRange(1, 1000))
@click.option("--progress/--no-progress", default=None, help="Back-fill progress bar [tty].")
@click.option(
    "--timeout",
    default=30,
    show_default=True,
    type=click.IntRange(0, 600),
    help="Long-poll seconds in continuous mode.",
)
@_guard
def sync(
    store: Path,
    user: str | None,
    once: bool,
    backfill: bool,
    rooms: str | None,
    import_keys: str | None,
    passphrase: str | None,
    page_size: int,
    progress: bool | None,
    timeout: int,
) -> None:
    """Retrieval agent: sync rooms into the store, back-fill history, fetch attachments.

    Runs continuously unless --once. Exactly one may run per store (lock.pid).
    """
    from matrixdir.sync_cmd import run_sync

    if import_keys and passphrase is None:
        raise click.UsageError("--import-keys needs --passphrase")
    room_list = [r.strip() for r in rooms.split(",") if r.strip()] if rooms else None
    show = sys.stderr.isatty() if progress is None else progress
    stats = _run(
        run_sync(
            store,
            user,
            once=once,
            backfill=backfill,
            rooms=room_list,
            import_keys=import_keys,
            passphrase=passphrase,
            page_size=page_size,
            progress=show,
            timeout_ms=timeout * 1000,
        )
    )
    click.echo(
        f"{stats.events} new events, {stats.backfilled} back-filled, {stats.media} attachments",
        err=True,
    )


@main.command()
@store_option
@user_option
@click.option("--room", "-r", help="Room ID to send to.")
@click.option("--text", "-t", is_flag=True, help="Standard input is plain text (m.text).")
@click.option("--flush", is_flag=True, help="Retry every queued message instead.")
@click.option(
    "--wait", default=30.0, show_default=True, help="Seconds to wait for a running agent."
)
@_guard
def send(
    store: Path, user: str | None, room: str | None, text: bool, flush: bool, wait: float
) -> None:
    """Submission agent: send the event on standard input, print its event_id.

    Standard input is {"type": ..., "content": {...}}, or text with --text. The message is
    queued in the outbox first; on failure it stays queued and the exit code is 75
    (EX_TEMPFAIL): `matrixdir send --flush` retries it with the same transaction ID.
    """
    from matrixdir.config import load_credentials
    from matrixdir.outbox import Outbox
    from matrixdir.submit import parse_input, send_entries

    creds = load_credentials(user)
    box = Outbox(store)
    if flush:
        if room or text:
            raise click.UsageError("--flush takes no --room or --text")
        entries = box.pending()
    else:
        if not room:
            raise click.UsageError("--room is required")
        type_, content = parse_input(sys.stdin.buffer.read(), text=text)
        entries = [box.queue(room, type_, content)]
    results = _run(send_entries(store, creds, entries, wait=wait))
    code = 0
    for result in results:
        if result.event_id:
            click.echo(result.event_id)
        else:
            assert result.error is not None
            state = "queued" if result.error.exit_code == EX_TEMPFAIL else "not sent"
            click.echo(f"matrixdir: {result.entry.txn_id} {state}: {result.error}", err=True)
            code = max(code, result.error.exit_code)
    if code:
        sys.exit(code)


@main.command()
@store_option
@click.option("--repair", is_flag=True, help="Fix what the spec allows (torn tails, temp files).")
@click.option("--quiet", "-q", is_flag=True, help="Print errors only.")
@_guard
def check(store: Path, repair: bool, quiet: bool) -> None:
    """Verify a store: lines, ordering, file names, duplicates, attachments.

    Exits 0 when clean, 65 when errors were found, 66 when there is no store, 75 when
    --repair is asked while a writer runs.
    """
    from matrixdir.check import check_store
    from matrixdir.errors import EX_NOINPUT

    if not store.is_dir():
        click.echo(f"matrixdir: no store at {store}", err=True)
        sys.exit(EX_NOINPUT)
    report = check_store(store, repair=repair)
    for finding in report.findings:
        if not quiet or finding.severity == "error":
            click.echo(str(finding))
    click.echo(
        f"{report.rooms} rooms, {report.events} events, {len(report.errors)} errors", err=True
    )
    sys.exit(report.exit_code)


@main.command()
@store_option
@user_option
@click.option("--room", "-r", help="Open this room first.")
@_guard
def view(store: Path, user: str | None, room: str | None) -> None:
    """User agent: browse the store in the terminal; new events appear live."""
    from matrixdir.view import MatrixdirApp

    if not store.is_dir():
        raise click.UsageError(f"no store at {store}")
    MatrixdirApp(store, user=user, initial_room=room).run()


__all__ = ["EX_TEMPFAIL", "EX_USAGE", "main"]
