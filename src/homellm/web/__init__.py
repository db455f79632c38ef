"""The web app: chat from any phone or laptop, and the household's admin page, served by the gateway.

It lives under ``/app/`` on the gateway's own port and TLS. Every page and script is a file in
``static/`` (vanilla JavaScript modules, no build step, nothing from a CDN); the JSON endpoints under
``/app/api/`` go through the gateway's checks like every other request. A browser signs in with a key
or a pairing code and then holds only an HttpOnly session cookie (``store/sessions.py``).
"""

from __future__ import annotations

from homellm.web.app import WebApp, is_web_path

__all__ = ["WebApp", "is_web_path"]
