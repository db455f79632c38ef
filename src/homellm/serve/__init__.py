"""The secure gateway: both APIs in front of any backend, keys, scopes, TLS, limits and usage."""
