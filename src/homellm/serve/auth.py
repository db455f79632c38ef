"""Where a request's API key may come from: Authorization Bearer, X-Api-Key, or the password of
HTTP Basic (for clients that only take credentials in a URL). Never the query string."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping


def presented_key(headers: Mapping[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if scheme.lower() == "basic" and value.strip():
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        _, _, password = decoded.partition(":")
        return password or None
    api_key = headers.get("x-api-key", "").strip()
    return api_key or None
