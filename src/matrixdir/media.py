"""Which media an event refers to (docs §6)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from matrixdir.errors import InvalidNameError
from matrixdir.layout import parse_mxc


@dataclass(frozen=True)
class MediaRef:
    """An mxc URI and, for an encrypted attachment, its `file` object (key, iv, hashes)."""

    uri: str
    file: dict[str, Any] | None = None


def media_refs(event: dict[str, Any]) -> list[MediaRef]:
    content = event.get("content")
    if not isinstance(content, dict):
        return []
    refs: list[MediaRef] = []

    def plain(uri: Any) -> None:
        if isinstance(uri, str):
            try:
                parse_mxc(uri)
            except InvalidNameError:
                return
            refs.append(MediaRef(uri))

    def encrypted(obj: Any) -> None:
        if isinstance(obj, dict) and isinstance(obj.get("url"), str):
            try:
                parse_mxc(obj["url"])
            except InvalidNameError:
                return
            refs.append(MediaRef(obj["url"], obj))

    plain(content.get("url"))
    encrypted(content.get("file"))
    info = content.get("info")
    if isinstance(info, dict):
        plain(info.get("thumbnail_url"))
        encrypted(info.get("thumbnail_file"))
    return refs
