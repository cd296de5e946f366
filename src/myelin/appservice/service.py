"""The registered application services as the rest of the server sees them.

- **Authentication** ("Identity assertion"): a request whose access token is an AS's
  `as_token` acts as the AS's sender, or, with the `user_id` query parameter, as any
  registered user in the AS's user namespaces.
- **Exclusive namespaces**: nobody but the owning AS may register such a user or create
  such an alias (M_EXCLUSIVE).
- **Queries**: when a client touches an unknown user or alias in an AS's namespace, the
  AS is asked (`GET /users/{userId}`, `/rooms/{roomAlias}`) so it can create it first.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from myelin.appservice.client import QUERY_TIMEOUT, V1, AppServiceClient, quoted
from myelin.appservice.registration import AppService
from myelin.errors import MatrixError

log = logging.getLogger("myelin.appservice")


def exclusive_error(what: str) -> MatrixError:
    return MatrixError(400, "M_EXCLUSIVE", f"{what} is reserved by an application service")


class AppServices:
    """Every registration of this server, with lookups by token and by namespace."""

    def __init__(
        self,
        services: Sequence[AppService],
        client: AppServiceClient | None = None,
    ) -> None:
        self.services = tuple(services)
        self.client = client or AppServiceClient()
        self._by_token = {s.as_token: s for s in self.services}
        self._by_id = {s.id: s for s in self.services}
        #: Whether a local account exists (set at wiring: the user API's lookup).
        self.user_exists: Callable[[str], Awaitable[bool]] | None = None

    def __bool__(self) -> bool:
        return bool(self.services)

    def by_token(self, token: str) -> AppService | None:
        return self._by_token.get(token)

    def by_id(self, as_id: str) -> AppService | None:
        return self._by_id.get(as_id)

    # ------------------------------------------------------------ identity assertion

    async def assert_identity(self, service: AppService, user_id: str | None) -> str:
        """The user a request with `service`'s token acts as (`user_id` query or sender)."""
        if user_id is None or user_id == service.sender:
            return service.sender
        if not service.is_user_in_namespace(user_id):
            raise MatrixError(
                403, "M_FORBIDDEN", "Application service cannot masquerade as this user"
            )
        if self.user_exists is not None and not await self.user_exists(user_id):
            raise MatrixError(
                403, "M_FORBIDDEN", "Application service has not registered this user"
            )
        return user_id

    # ------------------------------------------------------------ exclusivity

    def check_register(self, user_id: str, registering_as: AppService | None) -> None:
        """Registration of `user_id`: an AS only inside its own user namespaces, anyone
        else only outside every exclusive one."""
        if registering_as is not None:
            if not registering_as.is_user_in_namespace(user_id):
                raise MatrixError(
                    400, "M_EXCLUSIVE", f"User ID {user_id} is outside the service's namespaces"
                )
            return
        if any(s.is_exclusive_user(user_id) for s in self.services):
            raise exclusive_error(f"User ID {user_id}")

    def check_alias(self, alias: str, creator: str) -> None:
        """Creation of `alias` by `creator`: exclusive alias namespaces are their AS's."""
        for service in self.services:
            if service.is_exclusive_alias(alias) and not service.is_user_in_namespace(creator):
                raise exclusive_error(f"Room alias {alias}")

    # ------------------------------------------------------------ queries

    async def query_user(self, user_id: str) -> bool:
        """Ask the AS whose namespace holds `user_id` to create it; whether one did."""
        for service in self.services:
            if service.is_user_in_namespace(user_id) and service.url is not None:
                status, _ = await self.client.request(
                    service, "GET", f"{V1}/users/{quoted(user_id)}", time_limit=QUERY_TIMEOUT
                )
                if status == 200:
                    return True
        return False

    async def ensure_user(self, user_id: str) -> None:
        """Before a local user is touched (invited): when no account exists and an AS's
        namespace holds the ID, ask that AS, which may register it now."""
        if not any(s.is_user_in_namespace(user_id) for s in self.services):
            return
        if self.user_exists is not None and await self.user_exists(user_id):
            return
        await self.query_user(user_id)

    async def query_alias(self, alias: str) -> bool:
        """Ask the AS whose namespace holds `alias` to create it; whether one did."""
        for service in self.services:
            if service.is_alias_in_namespace(alias) and service.url is not None:
                status, _ = await self.client.request(
                    service, "GET", f"{V1}/rooms/{quoted(alias)}", time_limit=QUERY_TIMEOUT
                )
                if status == 200:
                    return True
        return False

    async def close(self) -> None:
        await self.client.close()
