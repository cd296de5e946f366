"""Federation receiver: verifies inbound PDUs and hands them to the roomserver input."""
