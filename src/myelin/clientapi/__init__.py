"""Client-Server API: parses client requests, builds events, hands them to the roomserver input.

Owns client-facing HTTP handlers only; never writes another component's projections."""
