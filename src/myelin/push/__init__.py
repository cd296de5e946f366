"""Push: reads the room event log, evaluates push rules, counts notifications, feeds pushers.

The push-rule engine is pure code (no I/O), shared by this component and the client API:

- `rules`: the typed model of rules, conditions and actions, parsed from and written to
  the wire format of GET /pushrules/.
- `defaults`: the server-default rules of the specification, for a given user.
- `ruleset`: what is stored per user (`StoredRules`), the effective `RuleSet`, and the
  REST operations (put with before/after, delete, enabled, actions) as pure functions.
- `evaluator`: `evaluate(ruleset, event, context)` gives the matched rule's `PushActions`
  (`is_notify`, `is_highlight`, `sound`, tweaks) or None.
- `errors`: `PushRuleError`, carrying the HTTP status and Matrix errcode to answer with.

Around it, with I/O:

- `counts`: unread counts and `/notifications`, evaluated from the sync projections.
- `sender`: the pusher, a reader of the room event log (own durable offset) that queues
  a notification for the `http` pushers of each user an event notifies, and a badge
  update after their read receipts.
- `gateway`: the Push Gateway API payload and its delivery, one queue and task per
  pusher, with retries and removal of pushers the gateway rejects.
"""
