"""What every client API handler may use: configuration, the user API, the signing key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from myelin.appservice.service import AppServices
from myelin.server.config import Config
from myelin.server.signingkey import ServerKey
from myelin.userapi.accounts import UserAPI

if TYPE_CHECKING:
    from myelin.clientapi.threepid import ThreepidService


@dataclass(frozen=True)
class ClientContext:
    config: Config
    users: UserAPI
    key: ServerKey
    #: The registered application services (empty when none are configured).
    appservices: AppServices | None = None
    #: Third-party identifiers (e-mail validation, identity servers); None: no 3PIDs.
    threepids: ThreepidService | None = None

    @property
    def server_name(self) -> str:
        return self.config.server_name
