// End-to-end encryption between matrix-js-sdk (Rust crypto, wasm) and another client.
//
// Usage: node crypto.mjs <base_url> <localpart> <password> <room_id> <peer_user_id>
//
// The user must exist and be invited to the encrypted room <room_id> by <peer_user_id>,
// whose client (driven by test_jsclient_crypto.py) sends a Megolm-encrypted message once
// this script reports "ready": by then the server holds this device's keys, so the peer
// finds them with /keys/query, claims a one-time key (/keys/claim) and sends the room key
// over Olm as a to-device message. This script then decrypts that message from the
// timeline and answers with an encrypted reply of its own for the peer to decrypt.
//
// Like scenario.mjs, every step prints one JSON line on stdout:
//   {"step": "<name>", "ok": true|false, "ms": <elapsed>, ...details, "error": "<why>"}
// and the script ends with {"step": "done"}. Steps have timeouts; a watchdog ends the run.

import "./node20.mjs";
import * as sdk from "matrix-js-sdk";
import { describe, stepRunner, until } from "./harness.mjs";

const STEP_TIMEOUT_MS = Number(process.env.STEP_TIMEOUT_MS ?? 20000);
const TOTAL_TIMEOUT_MS = Number(process.env.TOTAL_TIMEOUT_MS ?? 90000);
const REPLY = "hello back from matrix-js-sdk";

const [baseUrl, user, password, roomId, peer] = process.argv.slice(2);
if (!peer) {
  process.stderr.write("usage: node crypto.mjs <base_url> <user> <password> <room_id> <peer>\n");
  process.exit(2);
}

const { step, finish } = stepRunner({
  label: "crypto scenario",
  stepTimeoutMs: STEP_TIMEOUT_MS,
  totalTimeoutMs: TOTAL_TIMEOUT_MS,
});

let client;
let userId;
let deviceId;
const toDeviceTypes = [];

await step("login", async () => {
  const anonymous = sdk.createClient({ baseUrl });
  const resp = await anonymous.loginRequest({
    type: "m.login.password",
    identifier: { type: "m.id.user", user },
    password,
    initial_device_display_name: "matrix-js-sdk rust crypto",
  });
  userId = resp.user_id;
  deviceId = resp.device_id;
  client = sdk.createClient({
    baseUrl,
    accessToken: resp.access_token,
    userId,
    deviceId,
    timelineSupport: true,
  });
  return { user_id: userId, device_id: deviceId };
});

await step(
  "init_rust_crypto",
  async () => {
    await client.initRustCrypto({ useIndexedDB: false });
    const keys = await client.getCrypto().getOwnDeviceKeys();
    return { ed25519: keys.ed25519, curve25519: keys.curve25519 };
  },
  { needs: ["login"] },
);

await step(
  "start_and_join",
  async () => {
    client.on(sdk.ClientEvent.ReceivedToDeviceMessage, (payload) => {
      toDeviceTypes.push(payload.message.type);
    });
    const prepared = until(client, sdk.ClientEvent.Sync, () => client.isInitialSyncComplete());
    await client.startClient({ initialSyncLimit: 10 });
    await prepared;
    await client.joinRoom(roomId);
    const room = await until(client, sdk.ClientEvent.Sync, () => {
      const r = client.getRoom(roomId);
      return r?.getMyMembership() === "join" ? r : null;
    });
    const encrypted = await client.getCrypto().isEncryptionEnabledInRoom(roomId);
    return { room_id: room.roomId, encrypted };
  },
  { needs: ["init_rust_crypto"] },
);

// The server must hold this device's keys before the peer looks for them: the Rust
// crypto uploads them from its outgoing-request loop after a sync; ask the server (a
// real /keys/query) after each sync until this device is there.
await step(
  "ready",
  async () => {
    const device = await until(client, sdk.ClientEvent.Sync, async () => {
      const map = await client.getCrypto().getUserDeviceInfo([userId], true);
      return map.get(userId)?.get(deviceId);
    });
    return { device_id: device.deviceId, ed25519: device.getFingerprint() };
  },
  { needs: ["start_and_join"] },
);

let peerEvent;
await step(
  "decrypt_peer_message",
  async () => {
    const room = client.getRoom(roomId);
    peerEvent = await until(client, sdk.RoomEvent.Timeline, async () => {
      const ev = room
        .getLiveTimeline()
        .getEvents()
        .find((e) => e.getSender() === peer && e.isEncrypted());
      if (!ev) return null;
      await client.decryptEventIfNeeded(ev);
      if (ev.isDecryptionFailure()) {
        // The room key may arrive in a later sync: decryption is retried then.
        await until(ev, sdk.MatrixEventEvent.Decrypted, () => !ev.isDecryptionFailure());
      }
      return ev;
    });
    return {
      event_id: peerEvent.getId(),
      sender: peerEvent.getSender(),
      wire_type: peerEvent.getWireType(),
      type: peerEvent.getType(),
      body: peerEvent.getContent().body,
      sender_curve25519: peerEvent.getWireContent().sender_key,
      to_device_types: toDeviceTypes,
    };
  },
  { needs: ["ready"] },
);

await step(
  "send_encrypted_reply",
  async () => {
    const sent = await client.sendMessage(roomId, { msgtype: "m.text", body: REPLY });
    return { event_id: sent.event_id, body: REPLY };
  },
  { needs: ["decrypt_peer_message"] },
);

await step("stop", async () => {
  client?.stopClient();
  return {};
});

finish();
process.exit(0);
