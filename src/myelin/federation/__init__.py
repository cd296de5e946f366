"""Server-Server API: the receiver (inbound transactions, queries) and the sender (outbound)."""
