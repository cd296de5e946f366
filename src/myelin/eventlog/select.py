"""Which event log a server runs on, from its `event_log` setting.

`disk` (the embedded default) keeps the log in `<data dir>/eventlog`. A NATS URL puts it
in a JetStream stream instead, for deployments that scale out (several processes, or a
log that outlives the machine): `nats://host:port/STREAM`. The path names the stream
(default `MYELIN_EVENTS`), so that several homeservers can share one NATS without
sharing a log; the stream's subjects and reader offsets are namespaced by that name.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from myelin.eventlog.api import EventLog

DEFAULT_STREAM = "MYELIN_EVENTS"
#: JetStream stream names: no whitespace, `.`, `*`, `>` or path separators.
_STREAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NATS_SCHEMES = ("nats", "tls")


class EventLogSettingError(ValueError):
    """The `event_log` setting names no log this server can open."""


def check_event_log_setting(setting: str) -> str:
    """`setting` if it is `disk` or a usable NATS URL; else `EventLogSettingError`
    saying what a valid value looks like."""
    if setting == "disk":
        return setting
    url = urlsplit(setting)
    if url.scheme not in _NATS_SCHEMES or not url.hostname:
        raise EventLogSettingError(
            f"event_log must be 'disk' or nats://host:port/STREAM, not {setting!r}"
        )
    stream = url.path.strip("/") or DEFAULT_STREAM
    if not _STREAM_NAME.fullmatch(stream):
        raise EventLogSettingError(f"event_log stream name {stream!r}: use 1-64 of A-Z a-z 0-9 _ -")
    return setting


def open_event_log(setting: str, data_dir: Path) -> EventLog:
    """The (unopened) log `setting` names; use it as `async with open_event_log(...)`."""
    check_event_log_setting(setting)
    if setting == "disk":
        from myelin.eventlog.disk import DiskEventLog

        return DiskEventLog(data_dir / "eventlog")
    # Imported here so that the embedded default never loads the NATS client.
    from myelin.eventlog.jetstream import JetStreamEventLog

    url = urlsplit(setting)
    stream = url.path.strip("/") or DEFAULT_STREAM
    server = f"{url.scheme}://{url.netloc}"
    return JetStreamEventLog(servers=server, stream=stream, subject_prefix=stream)
