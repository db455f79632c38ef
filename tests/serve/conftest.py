"""Fixtures for the gateway tests live in tests/conftest.py (the security tests share them)."""
