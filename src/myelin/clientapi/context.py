"""What every client API handler may use: configuration, the user API, the signing key."""

from __future__ import annotations

from dataclasses import dataclass

from myelin.appservice.service import AppServices
from myelin.server.config import Config
from myelin.server.signingkey import ServerKey
from myelin.userapi.accounts import UserAPI


@dataclass(frozen=True)
class ClientContext:
    config: Config
    users: UserAPI
    key: ServerKey
    #: The registered application services (empty when none are configured).
    appservices: AppServices | None = None

    @property
    def server_name(self) -> str:
        return self.config.server_name
