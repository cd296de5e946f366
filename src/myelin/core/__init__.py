"""The pure Matrix core: identifiers, canonical JSON, signing, room versions, redaction,
authorization rules and state resolution. Plain data in, plain data out; no I/O, so it is
exhaustively testable and shared by the homeserver and matrixdir."""
