"""What every client API handler may use: configuration, the user API, the signing key."""

from __future__ import annotations

from dataclasses import dataclass

from myelin.server.config import Config
from myelin.server.signingkey import ServerKey
from myelin.userapi.accounts import UserAPI


@dataclass(frozen=True)
class ClientContext:
    config: Config
    users: UserAPI
    key: ServerKey

    @property
    def server_name(self) -> str:
        return self.config.server_name
