"""`matrixdir`: sync, view, send and check a matrixdir chat store."""

from __future__ import annotations

import click

from matrixdir import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="matrixdir")
def main() -> None:
    """A maildir-like store of Matrix chats as plain JSON-lines files."""
