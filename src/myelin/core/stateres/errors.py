"""The one error state resolution raises for input it cannot work with."""

from __future__ import annotations


class StateResolutionError(ValueError):
    """Malformed input: state sets that are not maps of `(type, state_key)` to event IDs,
    or a `fetch_event` callback that returns something other than an `Event` or None."""
