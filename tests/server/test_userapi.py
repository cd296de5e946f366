"""The user API on both storage backends: accounts, tokens, devices, filters, UIA sessions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from myelin.storage import Database, testing
from myelin.userapi.accounts import ServerNameMismatch, UserAPI, UserAPIError

pg_dsn = testing.pg_dsn_fixture()


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with testing.open_test_database(request.param, tmp_path, request) as database:
        yield database


async def test_accounts_and_passwords(db: Database) -> None:
    users = await UserAPI.open(db, "hs.test")
    uid = users.check_new_localpart("alice")
    await users.create_account(uid, "pw")
    with pytest.raises(UserAPIError) as info:
        await users.create_account(uid, "other")
    assert info.value.errcode == "M_USER_IN_USE"
    assert await users.verify_password(uid, "pw")
    assert not await users.verify_password(uid, "PW")
    assert not await users.verify_password("@nobody:hs.test", "pw")
    assert users.user_id_for("Alice") == uid
    assert users.user_id_for("@alice:hs.test") == uid
    with pytest.raises(UserAPIError):
        users.user_id_for("@alice:elsewhere")
    for bad in ("", "UPPER", "spa ce", "x" * 260):
        with pytest.raises(UserAPIError) as info:
            users.check_new_localpart(bad)
        assert info.value.errcode == "M_INVALID_USERNAME"
    # Migrations are idempotent: opening again changes nothing.
    again = await UserAPI.open(db, "hs.test")
    assert not await again.is_available(uid)


async def test_sessions_devices_and_logout(db: Database) -> None:
    users = await UserAPI.open(db, "hs.test")
    uid = "@bob:hs.test"
    await users.create_account(uid, "pw")
    one = await users.login(uid, device_id=None, display_name="one", ip="127.0.0.1")
    two = await users.login(uid, device_id="TWO", display_name="two", ip=None)
    assert (await users.lookup_token(one.access_token)).device_id == one.device_id
    assert [d.device_id for d in await users.devices(uid)] == sorted([one.device_id, "TWO"])

    # Logging in again with a known device keeps it but revokes its old token.
    two_again = await users.login(uid, device_id="TWO", display_name="ignored", ip=None)
    with pytest.raises(UserAPIError) as info:
        await users.lookup_token(two.access_token)
    assert info.value.extra == {"soft_logout": False}
    assert (await users.device(uid, "TWO")).display_name == "two"  # type: ignore[union-attr]
    assert await users.set_device_name(uid, "TWO", "renamed")
    assert not await users.set_device_name(uid, "NOPE", "x")

    await users.logout(uid, one.device_id)
    with pytest.raises(UserAPIError):
        await users.lookup_token(one.access_token)
    assert (await users.lookup_token(two_again.access_token)).device_id == "TWO"
    await users.logout_all(uid)
    assert await users.devices(uid) == []
    with pytest.raises(UserAPIError):
        await users.lookup_token(two_again.access_token)


async def test_refresh_tokens_and_soft_logout(db: Database) -> None:
    users = await UserAPI.open(db, "hs.test", refreshable_lifetime_ms=0)
    uid = "@carol:hs.test"
    await users.create_account(uid, "pw")
    s = await users.login(uid, device_id="D", display_name=None, ip=None, refreshable=True)
    assert s.refresh_token is not None
    with pytest.raises(UserAPIError) as info:
        await users.lookup_token(s.access_token)  # lifetime 0: expired at once
    assert info.value.extra == {"soft_logout": True}
    lost = await users.refresh(s.refresh_token)
    assert lost.device_id == "D" and lost.refresh_token != s.refresh_token
    # The answer was lost: the old refresh token is still good until the new pair is used,
    # and refreshing again replaces the unused pair.
    fresh = await users.refresh(s.refresh_token)
    assert fresh.refresh_token not in (s.refresh_token, lost.refresh_token)
    with pytest.raises(UserAPIError) as info:
        await users.refresh(lost.refresh_token)  # type: ignore[arg-type]
    assert info.value.errcode == "M_UNKNOWN_TOKEN"
    # Using the new refresh token spends the old one.
    newest = await users.refresh(fresh.refresh_token)  # type: ignore[arg-type]
    with pytest.raises(UserAPIError) as info:
        await users.refresh(s.refresh_token)
    assert info.value.errcode == "M_UNKNOWN_TOKEN"
    fresh = newest
    await users.delete_devices(uid, ["D"])
    with pytest.raises(UserAPIError):
        await users.refresh(fresh.refresh_token)  # type: ignore[arg-type]


async def test_password_change_deactivation_filters(db: Database) -> None:
    users = await UserAPI.open(db, "hs.test")
    uid = "@dave:hs.test"
    await users.create_account(uid, "old")
    keep = await users.login(uid, device_id="KEEP", display_name=None, ip=None)
    drop = await users.login(uid, device_id="DROP", display_name=None, ip=None)
    await users.set_password(uid, "new", keep_device="KEEP", logout_devices=True)
    assert await users.verify_password(uid, "new") and not await users.verify_password(uid, "old")
    assert [d.device_id for d in await users.devices(uid)] == ["KEEP"]
    with pytest.raises(UserAPIError):
        await users.lookup_token(drop.access_token)

    first = await users.add_filter(uid, {"room": {"rooms": ["!a:b"]}})
    second = await users.add_filter(uid, {})
    assert (first, second) == ("0", "1")
    assert await users.get_filter(uid, "0") == {"room": {"rooms": ["!a:b"]}}
    assert await users.get_filter(uid, "x") is None
    assert await users.get_filter("@other:hs.test", "0") is None

    await users.deactivate(uid)
    assert not await users.verify_password(uid, "new")
    assert not await users.is_available(uid)
    with pytest.raises(UserAPIError):
        await users.lookup_token(keep.access_token)


async def test_uia_sessions(db: Database) -> None:
    users = await UserAPI.open(db, "hs.test")
    sid = await users.uia_start("POST", "/_matrix/client/v3/register", None)
    assert await users.uia_get(sid) == ("POST", "/_matrix/client/v3/register", None, [])
    assert await users.uia_complete_stage(sid, "m.login.dummy") == ["m.login.dummy"]
    assert await users.uia_complete_stage(sid, "m.login.dummy") == ["m.login.dummy"]
    await users.uia_finish(sid)
    assert await users.uia_get(sid) is None


async def test_last_seen_is_recorded_without_a_write_per_request(db: Database) -> None:
    users = await UserAPI.open(db, "hs.test")
    uid = "@erin:hs.test"
    await users.create_account(uid, None)
    s = await users.login(uid, device_id="E", display_name=None, ip=None)
    info = await users.lookup_token(s.access_token)
    await users.touch_device(info, "10.0.0.1")
    first = await users.device(uid, "E")
    assert first is not None and first.last_seen_ip == "10.0.0.1"
    await users.touch_device(info, "10.0.0.1")  # within the interval: no new write
    assert await users.device(uid, "E") == first
    await users.touch_device(info, "10.0.0.2")  # a new address is recorded at once
    moved = await users.device(uid, "E")
    assert moved is not None and moved.last_seen_ip == "10.0.0.2"


async def test_the_server_name_cannot_change_under_existing_users(db: Database) -> None:
    users = await UserAPI.open(db, "first.test")
    await users.create_account("@u:first.test", None)
    with pytest.raises(ServerNameMismatch, match=r"first\.test to second\.test"):
        await UserAPI.open(db, "second.test")
