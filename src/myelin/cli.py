"""`myelin`: the homeserver's command line (serve, rebuild, user ...)."""

from __future__ import annotations

import click

from myelin import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="myelin")
def main() -> None:
    """Myelin, a Matrix homeserver on append-only event logs."""


@main.command()
def serve() -> None:
    """Start the homeserver on the embedded default (SQLite and a log on disk)."""
    click.echo(f"myelin {__version__}: the server is not built yet; nothing to serve.")
