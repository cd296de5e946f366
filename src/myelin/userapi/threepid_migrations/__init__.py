"""Schema migrations of third-party identifiers (3PIDs): the addresses of each account,
the identity servers they were bound on, and e-mail validation sessions."""
