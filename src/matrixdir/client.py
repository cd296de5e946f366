"""The homeserver client: matrix-nio, with end-to-end encryption through vodozemac.

Everything that talks to a homeserver goes through here, so errors come back as the typed
TemporaryFailure (retry later) or PermanentFailure.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import nio

from matrixdir.config import Credentials, crypto_dir, save_credentials
from matrixdir.errors import PermanentFailure, TemporaryFailure

# HTTP statuses (and errcodes) worth retrying: the request may succeed later.
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


def e2e_available() -> bool:
    try:
        import vodozemac  # noqa: F401
    except ImportError:
        return False
    return True


def make_client(
    creds: Credentials, *, encryption: bool = True, retries: int = 2
) -> nio.AsyncClient:
    """A logged-in client; with encryption, its keys live in the XDG data directory.

    `retries` is how many times a request that could not connect or timed out is repeated.
    """
    store = crypto_dir(creds.user_id)
    use_e2e = encryption and e2e_available()
    if use_e2e:
        store.mkdir(parents=True, exist_ok=True, mode=0o700)
    config = nio.AsyncClientConfig(
        encryption_enabled=use_e2e,
        store_sync_tokens=False,
        max_timeouts=retries,
        request_timeout=60,
    )
    client = nio.AsyncClient(
        creds.homeserver,
        creds.user_id,
        device_id=creds.device_id,
        store_path=str(store) if use_e2e else "",
        config=config,
    )
    client.restore_login(creds.user_id, creds.device_id, creds.access_token)
    return client


def raise_for(resp: Any, what: str) -> None:
    """Turn a nio error response into a typed exception: retry later, or give up."""
    if not isinstance(resp, nio.ErrorResponse):
        return
    transport = getattr(resp, "transport_response", None)
    status = getattr(transport, "status", None)
    errcode = getattr(resp, "status_code", None) or ""
    message = f"{what} failed: {errcode} {resp.message or ''}".strip()
    if status is not None:
        message += f" (HTTP {status})"
    if status is None or status >= 500 or status in _RETRY_STATUS or errcode == "M_LIMIT_EXCEEDED":
        raise TemporaryFailure(message)
    raise PermanentFailure(message)


async def login(
    homeserver: str,
    user: str,
    *,
    password: str | None = None,
    access_token: str | None = None,
    device_name: str = "matrixdir",
) -> Credentials:
    """Log in with a password, or adopt an access token (asking the server whose it is)."""
    client = nio.AsyncClient(homeserver, user)
    try:
        if access_token:
            client.access_token = access_token
            resp = await client.whoami()
            raise_for(resp, "whoami")
            if not getattr(resp, "device_id", None):
                raise PermanentFailure("the server did not say which device the token is for")
            creds = Credentials(homeserver, resp.user_id, resp.device_id, access_token)
        elif password is not None:
            resp = await client.login(password, device_name=device_name)
            raise_for(resp, "login")
            creds = Credentials(homeserver, resp.user_id, resp.device_id, resp.access_token)
        else:
            raise PermanentFailure("give a password or an access token")
    except (OSError, TimeoutError) as e:
        raise TemporaryFailure(f"cannot reach {homeserver}: {e}") from e
    finally:
        await client.close()
    save_credentials(creds)
    return creds


async def room_is_encrypted(client: nio.AsyncClient, room_id: str) -> bool:
    """Ask the server whether the room has an m.room.encryption state event."""
    path = (
        f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id, safe='')}/state/m.room.encryption/"
    )
    resp = await client.send(
        "GET", path, headers={"Authorization": f"Bearer {client.access_token}"}
    )
    try:
        if resp.status == 200:
            return True
        if resp.status == 404:
            return False
        if resp.status == 403:
            raise PermanentFailure(f"not allowed to read {room_id}")
        raise TemporaryFailure(f"state of {room_id}: HTTP {resp.status}")
    finally:
        resp.release()
