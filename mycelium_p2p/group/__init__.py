"""Groups: transport, membership, election."""
