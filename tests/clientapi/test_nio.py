"""matrix-nio, a client library nobody here wrote, against a real `myelin serve`."""

from __future__ import annotations

import nio

from tests.support.server import ServerProcess


async def test_register_login_whoami_devices_logout(myelin_server: ServerProcess) -> None:
    url = myelin_server.base_url
    client = nio.AsyncClient(url, "alice")
    try:
        reg = await client.register("alice", "correct horse", device_name="nio phone")
        assert isinstance(reg, nio.RegisterResponse), reg
        assert reg.user_id == "@alice:localhost"
        first_device = reg.device_id

        who = await client.whoami()
        assert isinstance(who, nio.WhoamiResponse), who
        assert (who.user_id, who.device_id) == ("@alice:localhost", first_device)
        assert who.is_guest is False

        again = await client.register("alice", "other")
        assert isinstance(again, nio.responses.RegisterErrorResponse)
        assert again.status_code == "M_USER_IN_USE"
    finally:
        await client.close()

    second = nio.AsyncClient(url, "@alice:localhost")
    try:
        bad = await second.login("wrong password")
        assert isinstance(bad, nio.LoginError)
        assert bad.status_code == "M_FORBIDDEN"

        login = await second.login("correct horse", device_name="nio laptop")
        assert isinstance(login, nio.LoginResponse), login
        assert login.device_id != first_device

        devices = await second.devices()
        assert isinstance(devices, nio.DevicesResponse), devices
        by_id = {d.id: d.display_name for d in devices.devices}
        assert by_id == {first_device: "nio phone", login.device_id: "nio laptop"}

        renamed = await second.update_device(first_device, {"display_name": "old phone"})
        assert isinstance(renamed, nio.UpdateDeviceResponse), renamed
        devices = await second.devices()
        assert isinstance(devices, nio.DevicesResponse)
        assert {d.id: d.display_name for d in devices.devices}[first_device] == "old phone"

        # Deleting a device needs the password (user-interactive auth).
        challenge = await second.delete_devices([first_device])
        assert isinstance(challenge, nio.responses.DeleteDevicesAuthResponse), challenge
        done = await second.delete_devices(
            [first_device],
            auth={
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "alice"},
                "password": "correct horse",
                "session": challenge.session,
            },
        )
        assert isinstance(done, nio.DeleteDevicesResponse), done
        devices = await second.devices()
        assert isinstance(devices, nio.DevicesResponse)
        assert [d.id for d in devices.devices] == [login.device_id]

        out = await second.logout()
        assert isinstance(out, nio.LogoutResponse), out
        who = await second.whoami()
        assert isinstance(who, nio.WhoamiError)
        assert who.status_code == "M_UNKNOWN_TOKEN"
    finally:
        await second.close()
