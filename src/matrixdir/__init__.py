"""matrixdir: a maildir-like directory of per-room JSON-lines Matrix event files.

Three agents each do one job: `matrixdir sync` (retrieval), `matrixdir send` (submission),
`matrixdir view` (user agent); `matrixdir check` verifies a store.
"""

__version__ = "0.1.0"
