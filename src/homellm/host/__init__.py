"""Preparing the server machine: its firewall, an audit of risky settings, starting at boot."""
