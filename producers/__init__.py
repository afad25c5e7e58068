"""Producer scripts and the HTTP intake: everything that writes events into Sluice."""
