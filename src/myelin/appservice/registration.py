"""Application service registrations: the YAML files of application-service-api.md
("Registration"), parsed once at startup into frozen values.

A registration says which users, room aliases and room IDs the application service (AS)
is interested in (namespaces of regular expressions, each possibly `exclusive`), the
token it authenticates with (`as_token`) and the one we present to it (`hs_token`).
Regular expressions are matched from the start of the ID, as the reference server does
(an unanchored end lets `@irc_.*` cover every server name suffix).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class RegistrationError(Exception):
    """A registration file is missing a field, malformed, or clashes with another."""


@dataclass(frozen=True, slots=True)
class Namespace:
    regex: re.Pattern[str]
    exclusive: bool

    def matches(self, value: str) -> bool:
        return self.regex.match(value) is not None


@dataclass(frozen=True, slots=True)
class AppService:
    """One registered application service."""

    id: str
    url: str | None
    as_token: str
    hs_token: str
    sender: str
    users: tuple[Namespace, ...]
    aliases: tuple[Namespace, ...]
    rooms: tuple[Namespace, ...]
    protocols: tuple[str, ...]
    rate_limited: bool
    receive_ephemeral: bool

    def is_user_in_namespace(self, user_id: str) -> bool:
        return user_id == self.sender or any(n.matches(user_id) for n in self.users)

    def is_exclusive_user(self, user_id: str) -> bool:
        return user_id == self.sender or any(n.exclusive and n.matches(user_id) for n in self.users)

    def is_alias_in_namespace(self, alias: str) -> bool:
        return any(n.matches(alias) for n in self.aliases)

    def is_exclusive_alias(self, alias: str) -> bool:
        return any(n.exclusive and n.matches(alias) for n in self.aliases)

    def is_room_in_namespace(self, room_id: str) -> bool:
        return any(n.matches(room_id) for n in self.rooms)


def _namespaces(raw: Any, kind: str, where: str) -> tuple[Namespace, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise RegistrationError(f"{where}: namespaces.{kind} must be a list")
    out = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("regex"), str):
            raise RegistrationError(f"{where}: each namespaces.{kind} entry needs a 'regex'")
        exclusive = item.get("exclusive", False)
        if not isinstance(exclusive, bool):
            raise RegistrationError(f"{where}: 'exclusive' must be true or false")
        try:
            pattern = re.compile(item["regex"])
        except re.error as exc:
            raise RegistrationError(f"{where}: bad regex {item['regex']!r}: {exc}") from None
        out.append(Namespace(pattern, exclusive))
    return tuple(out)


def _required_str(raw: dict[str, Any], key: str, where: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value:
        raise RegistrationError(f"{where}: '{key}' must be a non-empty string")
    return value


def parse_registration(raw: Any, server_name: str, where: str = "registration") -> AppService:
    """One registration from its parsed YAML, or RegistrationError saying what is wrong."""
    if not isinstance(raw, dict):
        raise RegistrationError(f"{where}: expected a mapping")
    url = raw.get("url")
    if url is not None and not isinstance(url, str):
        raise RegistrationError(f"{where}: 'url' must be a string or null")
    namespaces = raw.get("namespaces") or {}
    if not isinstance(namespaces, dict):
        raise RegistrationError(f"{where}: 'namespaces' must be a mapping")
    protocols = raw.get("protocols") or []
    if not isinstance(protocols, list) or not all(isinstance(p, str) for p in protocols):
        raise RegistrationError(f"{where}: 'protocols' must be a list of strings")
    localpart = _required_str(raw, "sender_localpart", where)
    return AppService(
        id=_required_str(raw, "id", where),
        url=url.rstrip("/") if url else None,
        as_token=_required_str(raw, "as_token", where),
        hs_token=_required_str(raw, "hs_token", where),
        sender=f"@{localpart}:{server_name}",
        users=_namespaces(namespaces.get("users"), "users", where),
        aliases=_namespaces(namespaces.get("aliases"), "aliases", where),
        rooms=_namespaces(namespaces.get("rooms"), "rooms", where),
        protocols=tuple(protocols),
        rate_limited=raw.get("rate_limited") is not False,
        receive_ephemeral=bool(
            raw.get("receive_ephemeral") or raw.get("de.sorunome.msc2409.push_ephemeral")
        ),
    )


def load_registrations(paths: Iterable[Path], server_name: str) -> list[AppService]:
    """Every registration file, checked for the uniqueness the spec demands of `id` and
    `as_token`."""
    services: list[AppService] = []
    for path in paths:
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise RegistrationError(f"{path}: cannot read: {exc}") from None
        services.append(parse_registration(raw, server_name, str(path)))
    check_unique(services)
    return services


def check_unique(services: Sequence[AppService]) -> None:
    for attr in ("id", "as_token"):
        seen: set[str] = set()
        for service in services:
            value = getattr(service, attr)
            if value in seen:
                raise RegistrationError(f"two application services share the same {attr}")
            seen.add(value)
