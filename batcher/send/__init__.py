"""Sending the plan: the wire contract, authentication, pacing and the sender loop."""
