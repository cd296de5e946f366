"""Server-Server API: the receiver (inbound transactions, queries) and the sender (outbound).

- `client`: outbound requests signed with `X-Matrix`, server name resolution.
- `keyring`: other servers' keys (fetched, checked, cached) and notary answers.
- `auth`: authentication of inbound requests.
- `inbound`: checks on receipt of PDUs and their input into the roomserver, fetching
  missing auth and prev events (`/event_auth`, `/get_missing_events`, `/state_ids`).
- `receiver.routes`: the routes this server answers (a writer, like the client API).
- `remote`: joins, leaves, invites and alias look-ups through other servers, for the
  client API (`RoomWriter.remote`).
- `sender`: the log reader that delivers events, and per-destination queues of
  transactions (PDUs and EDUs).
- `edus`, `keys`: EDUs in and out (typing, receipts, presence; device lists, to-device
  messages) and end-to-end keys of remote users.
- `wiring`: puts it together for `myelin serve`.

The pure parts (request signing, the `X-Matrix` header, server ACLs) are in
`myelin.core.federation`.
"""
