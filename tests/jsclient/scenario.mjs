// A two-user chat scenario driven by matrix-js-sdk against a running homeserver.
//
// Usage: node scenario.mjs <base_url> <alice_localpart> <alice_password> <bob_localpart> <bob_password>
//
// The users must already exist. Every step prints exactly one JSON line on stdout:
//   {"step": "<name>", "ok": true|false, "ms": <elapsed>, ...details, "error": "<why>"}
// and the script ends with a {"step": "done"} line. A failed step does not stop the
// following ones unless they depend on it (then they report "skipped": "<dependency>").
// Everything the SDK logs goes to stderr, so stdout carries only the result lines.
// Each step has its own timeout and the whole run has a watchdog, so the caller always
// gets an answer instead of a hang.

import "./node20.mjs";
import * as sdk from "matrix-js-sdk";
import { describe, stepRunner, until, withTimeout } from "./harness.mjs";

const STEP_TIMEOUT_MS = Number(process.env.STEP_TIMEOUT_MS ?? 15000);
const TOTAL_TIMEOUT_MS = Number(process.env.TOTAL_TIMEOUT_MS ?? 120000);
const HISTORY = 25; // messages sent before the clients start, fetched back by pagination
const INITIAL_SYNC_LIMIT = 5;

const [baseUrl, aliceName, alicePw, bobName, bobPw] = process.argv.slice(2);
if (!bobPw) {
  process.stderr.write("usage: node scenario.mjs <base_url> <alice> <alice_pw> <bob> <bob_pw>\n");
  process.exit(2);
}

const { step, finish, failed } = stepRunner({
  label: "scenario",
  stepTimeoutMs: STEP_TIMEOUT_MS,
  totalTimeoutMs: TOTAL_TIMEOUT_MS,
});

async function login(user, password) {
  const anonymous = sdk.createClient({ baseUrl });
  const resp = await anonymous.loginRequest({
    type: "m.login.password",
    identifier: { type: "m.id.user", user },
    password,
    initial_device_display_name: "matrix-js-sdk scenario",
  });
  if (!resp.access_token || !resp.user_id || !resp.device_id) {
    throw new Error(`login response lacks credentials: ${JSON.stringify(resp)}`);
  }
  const client = sdk.createClient({
    baseUrl,
    accessToken: resp.access_token,
    userId: resp.user_id,
    deviceId: resp.device_id,
    timelineSupport: true,
  });
  return { client, userId: resp.user_id, deviceId: resp.device_id };
}

async function start(client) {
  const prepared = until(client, sdk.ClientEvent.Sync, () => {
    const state = client.getSyncState();
    if (state === "ERROR") throw new Error(`sync failed: ${describe(client.getSyncStateData()?.error)}`);
    return state === "PREPARED" || state === "SYNCING";
  });
  await client.startClient({ initialSyncLimit: INITIAL_SYNC_LIMIT, lazyLoadMembers: false });
  await prepared;
}

const bodies = (events) =>
  events.filter((e) => e.getType() === "m.room.message").map((e) => e.getContent().body);

// The oldest of the timelines linked to `timeline` (pagination links adjacent ones).
function earliest(timeline) {
  let first = timeline;
  while (first.getNeighbouringTimeline(sdk.EventTimeline.BACKWARDS)) {
    first = first.getNeighbouringTimeline(sdk.EventTimeline.BACKWARDS);
  }
  return first;
}

// Every event of the timelines linked to `timeline`, oldest first.
function linked(timeline) {
  const events = [];
  for (let t = earliest(timeline); t; t = t.getNeighbouringTimeline(sdk.EventTimeline.FORWARDS)) {
    events.push(...t.getEvents());
  }
  return events;
}

// The counts the server itself reports for bob in `roomId` (a one-off /sync, outside the
// SDK's own bookkeeping, which recomputes highlights locally from receipts).
async function serverCounts() {
  const filter = JSON.stringify({ room: { rooms: [roomId], timeline: { limit: 1 } } });
  const resp = await bob.client.http.authedRequest(sdk.Method.Get, "/sync", { timeout: "0", filter });
  const counts = resp.rooms?.join?.[roomId]?.unread_notifications;
  if (!counts) throw new Error(`/sync has no unread_notifications for ${roomId}: ${JSON.stringify(resp.rooms?.join?.[roomId])}`);
  return { total: counts.notification_count, highlight: counts.highlight_count };
}

let alice, bob, roomId, liveEventId;
const historyIds = [];
const historyBodies = Array.from({ length: HISTORY }, (_, i) => `history ${i}`);
const liveBody = "live: are you there, bob?";

await step("login_alice", async () => {
  alice = await login(aliceName, alicePw);
  return { user_id: alice.userId, device_id: alice.deviceId };
});
await step("login_bob", async () => {
  bob = await login(bobName, bobPw);
  return { user_id: bob.userId, device_id: bob.deviceId };
});

await step(
  "create_room_and_join",
  async () => {
    const created = await alice.client.createRoom({
      preset: sdk.Preset.PrivateChat,
      invite: [bob.userId],
      name: "js-sdk scenario",
    });
    roomId = created.room_id;
    await bob.client.joinRoom(roomId);
    return { room_id: roomId };
  },
  { needs: ["login_alice", "login_bob"] },
);

await step(
  "send_history",
  async () => {
    for (const body of historyBodies) {
      const sent = await alice.client.sendMessage(roomId, { msgtype: "m.text", body });
      historyIds.push(sent.event_id);
    }
    return { sent: historyBodies.length };
  },
  { needs: ["create_room_and_join"] },
);

await step(
  "start_clients",
  async () => {
    await Promise.all([start(alice.client), start(bob.client)]);
    const room = bob.client.getRoom(roomId);
    if (!room) throw new Error(`bob's client does not know room ${roomId} after the initial sync`);
    const initial = bodies(room.getLiveTimeline().getEvents());
    if (initial.length === 0 || initial.length > INITIAL_SYNC_LIMIT) {
      throw new Error(`initial timeline should hold 1..${INITIAL_SYNC_LIMIT} messages: ${JSON.stringify(initial)}`);
    }
    const expected = historyBodies.slice(-initial.length);
    if (JSON.stringify(initial) !== JSON.stringify(expected)) {
      throw new Error(`initial timeline ${JSON.stringify(initial)}, expected ${JSON.stringify(expected)}`);
    }
    return { initial_messages: initial.length, sync_state: bob.client.getSyncState() };
  },
  { needs: ["send_history"] },
);

await step(
  "live_timeline_event",
  async () => {
    const room = bob.client.getRoom(roomId);
    const received = new Promise((resolve) => {
      const onTimeline = (event, eventRoom, toStartOfTimeline) => {
        if (eventRoom?.roomId !== roomId || toStartOfTimeline) return;
        if (event.getType() !== "m.room.message" || event.getContent().body !== liveBody) return;
        bob.client.off(sdk.RoomEvent.Timeline, onTimeline);
        resolve(event);
      };
      bob.client.on(sdk.RoomEvent.Timeline, onTimeline);
    });
    const sent = await alice.client.sendMessage(roomId, {
      msgtype: "m.text",
      body: liveBody,
      "m.mentions": { user_ids: [bob.userId] },
    });
    liveEventId = sent.event_id;
    const event = await received;
    if (event.getId() !== liveEventId) throw new Error(`got ${event.getId()}, sent ${liveEventId}`);
    if (event.getSender() !== alice.userId) throw new Error(`sender ${event.getSender()}`);
    const last = room.getLiveTimeline().getEvents().at(-1);
    if (last?.getId() !== liveEventId) throw new Error(`live timeline ends with ${last?.getId()}`);
    return { event_id: liveEventId };
  },
  { needs: ["start_clients"] },
);

await step(
  "unread_notification_counts",
  async () => {
    // Every message from alice after bob joined notifies him (two-member room); the live
    // one mentions him, so it also highlights. The total comes from the server's
    // `unread_notifications` in /sync.
    const room = bob.client.getRoom(roomId);
    const wantTotal = HISTORY + 1;
    const total = () => room.getUnreadNotificationCount(sdk.NotificationCountType.Total);
    const highlight = () => room.getUnreadNotificationCount(sdk.NotificationCountType.Highlight);
    try {
      await withTimeout(
        until(room, sdk.RoomEvent.UnreadNotifications, () => total() === wantTotal && highlight() === 1),
        5000,
        "unread counts",
      );
    } catch {
      throw new Error(`bob's counts: total ${total()} highlight ${highlight()}, expected ${wantTotal} and 1`);
    }
    const server = await serverCounts();
    if (server.total !== wantTotal || server.highlight !== 1) {
      throw new Error(`GET /sync unread_notifications ${JSON.stringify(server)}, expected ${wantTotal} and 1`);
    }
    return { total: total(), highlight: highlight() };
  },
  { needs: ["live_timeline_event"] },
);

await step(
  "typing",
  async () => {
    const typingSeen = (want) =>
      until(alice.client, sdk.RoomMemberEvent.Typing, () => {
        const member = alice.client.getRoom(roomId)?.getMember(bob.userId);
        return member && member.typing === want;
      });
    const started = typingSeen(true);
    await bob.client.sendTyping(roomId, true, 20000);
    await started;
    const stopped = typingSeen(false);
    await bob.client.sendTyping(roomId, false, 0);
    await stopped;
    return { started: true, stopped: true };
  },
  { needs: ["start_clients"] },
);

await step(
  "read_receipt",
  async () => {
    const bobRoom = bob.client.getRoom(roomId);
    const event = bobRoom.findEventById(liveEventId);
    if (!event) throw new Error(`bob's room does not hold ${liveEventId}`);
    const aliceRoom = alice.client.getRoom(roomId);
    const seen = until(aliceRoom, sdk.RoomEvent.Receipt, () => {
      const receipt = aliceRoom.getReadReceiptForUserId(bob.userId, true);
      return receipt?.eventId === liveEventId ? receipt : null;
    });
    await bob.client.sendReadReceipt(event, sdk.ReceiptType.Read);
    const receipt = await seen;
    if (!aliceRoom.hasUserReadEvent(bob.userId, liveEventId)) {
      throw new Error("alice's room does not consider the event read by bob");
    }
    return { event_id: receipt.eventId, ts: receipt.data?.ts ?? null };
  },
  { needs: ["live_timeline_event"] },
);

await step(
  "receipt_clears_counts",
  async () => {
    // The server must send bob counts of 0 once his receipt covers the newest event.
    const room = bob.client.getRoom(roomId);
    const total = () => room.getUnreadNotificationCount(sdk.NotificationCountType.Total);
    const highlight = () => room.getUnreadNotificationCount(sdk.NotificationCountType.Highlight);
    // A fresh message from bob himself forces a sync round on his side without notifying him.
    const synced = new Promise((resolve) => {
      const onTimeline = (ev, eventRoom, toStart) => {
        if (eventRoom?.roomId === roomId && !toStart && ev.getContent().body === "bob read it") {
          bob.client.off(sdk.RoomEvent.Timeline, onTimeline);
          resolve();
        }
      };
      bob.client.on(sdk.RoomEvent.Timeline, onTimeline);
    });
    await bob.client.sendMessage(roomId, { msgtype: "m.text", body: "bob read it" });
    await synced;
    try {
      await withTimeout(
        until(room, sdk.RoomEvent.UnreadNotifications, () => total() === 0 && highlight() === 0),
        5000,
        "counts to clear",
      );
    } catch {
      throw new Error(`bob's counts after his receipt: total ${total()} highlight ${highlight()}`);
    }
    const server = await serverCounts();
    if (server.total !== 0 || server.highlight !== 0) {
      throw new Error(`GET /sync unread_notifications after the receipt: ${JSON.stringify(server)}`);
    }
    return { total: total(), highlight: highlight() };
  },
  { needs: ["read_receipt", "unread_notification_counts"] },
);

await step(
  "scrollback_history",
  async () => {
    // Bob started with INITIAL_SYNC_LIMIT events; walk back to the room's creation.
    const room = bob.client.getRoom(roomId);
    let rounds = 0;
    while (room.oldState.paginationToken !== null && rounds < 50) {
      await bob.client.scrollback(room, 10);
      rounds += 1;
    }
    const events = room.getLiveTimeline().getEvents();
    const seen = bodies(events).filter((b) => b.startsWith("history "));
    if (JSON.stringify(seen) !== JSON.stringify(historyBodies)) {
      throw new Error(`history after scrollback: ${JSON.stringify(seen)}`);
    }
    if (events[0]?.getType() !== "m.room.create") {
      throw new Error(`timeline starts with ${events[0]?.getType()}, not m.room.create`);
    }
    return { rounds, events: events.length };
  },
  { needs: ["start_clients"] },
);

await step(
  "paginate_event_timeline",
  async () => {
    // Alice opens a timeline at the first history message (GET /context), which her live
    // timeline (INITIAL_SYNC_LIMIT events) does not hold, and pages forward from it until
    // it joins the live timeline; then she pages back to the room's
    // creation from there (/context is asked for no neighbours, so that part is all
    // /messages backwards). The linked timelines must read as the whole history, in order.
    const room = alice.client.getRoom(roomId);
    const live = room.getLiveTimeline();
    const anchored = await alice.client.getEventTimeline(room.getUnfilteredTimelineSet(), historyIds[0]);
    if (!anchored || anchored === live) throw new Error(`no separate timeline around ${historyIds[0]}`);
    let forwardPages = 0;
    // Stop once linked: the SDK keeps no forward token then, and /messages without `from`
    // rightly starts again at the room's first event.
    while (
      !anchored.getNeighbouringTimeline(sdk.EventTimeline.FORWARDS) &&
      (await alice.client.paginateEventTimeline(anchored, { backwards: false, limit: 7 })) &&
      forwardPages < 50
    ) {
      forwardPages += 1;
    }
    if (earliest(live) !== anchored) throw new Error("forward pagination did not reach the live timeline");
    let backwardPages = 0;
    while ((await alice.client.paginateEventTimeline(anchored, { backwards: true, limit: 7 })) && backwardPages < 50) {
      backwardPages += 1;
    }
    const all = linked(live);
    const messages = bodies(all);
    const want = [...historyBodies, liveBody];
    if (JSON.stringify(messages.slice(0, want.length)) !== JSON.stringify(want)) {
      throw new Error(`linked timelines read ${JSON.stringify(messages)}`);
    }
    if (all[0]?.getType() !== "m.room.create") {
      throw new Error(
        `history starts with ${all[0]?.getType()} after ${backwardPages} pages back: ${all.map((e) => e.getContent().body ?? e.getType()).join("|")}`,
      );
    }
    const ids = all.map((e) => e.getId());
    if (new Set(ids).size !== ids.length) throw new Error("an event appears twice in the linked timelines");
    return { forward_pages: forwardPages, backward_pages: backwardPages, events: all.length };
  },
  { needs: ["live_timeline_event"] },
);

await step("stop_clients", async () => {
  alice?.client.stopClient();
  bob?.client.stopClient();
  return {};
});

finish({ failed: [...failed] });
process.exit(0);
