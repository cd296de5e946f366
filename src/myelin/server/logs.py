"""Structured, quiet logging: `key=value` lines to `<data dir>/log/myelin.log`, and only
warnings and errors to stderr, so a healthy server prints one line when it starts."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path


class KeyValueFormatter(logging.Formatter):
    """`ts=... level=... logger=... msg="..."` plus the exception, one record per line."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        msg = record.getMessage().replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        line = (
            f"ts={ts}.{int(record.msecs):03d}Z level={record.levelname.lower()} "
            f'logger={record.name} msg="{msg}"'
        )
        if record.exc_info:
            exc = self.formatException(record.exc_info).replace("\n", "\\n")
            line += f' exc="{exc}"'
        return line


def setup_logging(log_dir: Path, level: str) -> None:
    log_dir.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    formatter = KeyValueFormatter()
    file_handler = logging.FileHandler(log_dir / "myelin.log", encoding="utf-8")
    file_handler.setFormatter(formatter)
    file_handler.setLevel(level.upper())
    err_handler = logging.StreamHandler(sys.stderr)
    err_handler.setFormatter(formatter)
    err_handler.setLevel(logging.WARNING)
    root.addHandler(file_handler)
    root.addHandler(err_handler)
    root.setLevel(level.upper())
    # The HTTP server's own chatter (worker spawn messages) is not useful at info level.
    logging.getLogger("_granian").setLevel(logging.ERROR)
    logging.getLogger("granian").setLevel(logging.ERROR)
