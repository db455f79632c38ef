"""The web app's words: every message the pages show, marked for the gettext catalog.

The pages name a message by its English text (``data-i18n="Sign in"`` in HTML, ``t("Sign in")`` in
JavaScript); ``GET /app/api/i18n`` answers this list translated into the request's language, from the
same catalog as every other message (``homellm/i18n``). A test keeps this list and the pages in step and
checks that each message has a Japanese translation.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from homellm.i18n import N_, _

# ruff: noqa: E501  (each message on one line, as the pages spell it)

WEB_MESSAGES: tuple[str, ...] = (
    N_("(the QR code named no certificate)"),
    N_("(this server serves plain HTTP)"),
    N_("(until {until}, once)"),
    N_(", {n}% busy"),
    N_("30 days"),
    N_("7 days"),
    N_("90 days"),
    N_("API key"),
    N_("Active"),
    N_("Admin"),
    N_("Admin (manages models and this page)"),
    N_("Ask anything. Answers come from the model on your home server."),
    N_("Backend:"),
    N_("Chat"),
    N_("Check again"),
    N_("Code:"),
    N_(
        "Compare it with the fingerprint `homellm up` printed, and with the certificate your browser shows (tap the warning or the padlock in the address bar). If they differ, stop here: someone may be between this device and the server."
    ),
    N_("Compare it with the fingerprint `homellm up` printed."),
    N_("Context"),
    N_("Conversations"),
    N_("Conversations are kept in this browser only."),
    N_("Copied"),
    N_("Copy"),
    N_("Copy failed"),
    N_("Copy the key now: it is not shown again. A phone can scan the QR code instead."),
    N_("Create key"),
    N_("Delete this conversation"),
    N_("Doctor"),
    N_("Errors"),
    N_("Expired"),
    N_("Expires"),
    N_("First token (ms)"),
    N_("Fix: {fix}"),
    N_("GPU"),
    N_("Household"),
    N_("In VRAM"),
    N_("Instructions for the model in this conversation (optional)"),
    N_("Key"),
    N_("Keys"),
    N_("Last used"),
    N_("Message (Enter sends, Shift+Enter adds a line)"),
    N_("Model"),
    N_("Models"),
    N_("Models available"),
    N_("Models loaded now"),
    N_("Name"),
    N_("Name of this device"),
    N_("New chat"),
    N_("New key"),
    N_("No NVIDIA GPU found (NVML): the model runs on the CPU or a GPU homellm cannot read."),
    N_("No requests in this period."),
    N_("Nothing is running."),
    N_("Open a pairing code"),
    N_("Open code {nameplate}…, until {until}"),
    N_("Output tokens"),
    N_("Pair"),
    N_("Pair this device"),
    N_("Pairing codes"),
    N_("Parameters"),
    N_("Period"),
    N_("Prompt tokens"),
    N_("Quantization"),
    N_("Regenerate"),
    N_("Requests"),
    N_("Requests per day, by key"),
    N_("Revoke"),
    N_("Revoke {name}? Devices using it are signed out at once."),
    N_("Revoked"),
    N_("Running now"),
    N_("Scan the QR code of `homellm pair --qr` on the server, or paste an API key."),
    N_("Seconds"),
    N_("Send"),
    N_("Server"),
    N_("Sign in"),
    N_("Sign out"),
    N_("Size"),
    N_("State"),
    N_("Stop"),
    N_("Stopped."),
    N_("System prompt"),
    N_("The QR code names the certificate of the server it was made on:"),
    N_("This key may not use any model the server has."),
    N_("This server's certificate:"),
    N_("Time to first token"),
    N_("Time to first token, by model (ms)"),
    N_("Tokens per day, by model"),
    N_("Usage"),
    N_("Withdraw"),
    N_("Yes"),
    N_("You are signed out."),
    N_("answering"),
    N_("comma-separated; empty: every model"),
    N_("down: {detail}"),
    N_("e.g. alice-phone"),
    N_("every model"),
    N_("in 30 days"),
    N_("in 90 days"),
    N_("in a day"),
    N_("in a week"),
    N_("no expiry"),
    N_("not used yet"),
    N_("waiting for the first token"),
    N_("{name}: {used} used, {free} free{util}"),
)

_HTML = re.compile(r'data-i18n(?:-placeholder|-title|-label)?="([^"]*)"')
_JS = re.compile(r'\bt\(\s*"((?:[^"\\]|\\.)*)"')


def catalog() -> dict[str, str]:
    """Every web message in the current language (English ones map to themselves)."""
    return {m: _(m) for m in WEB_MESSAGES}


def used_in_pages(folder: Path) -> set[str]:
    """The messages the pages and scripts in ``folder`` ask for."""
    found: set[str] = set()
    for page in folder.rglob("*.html"):
        found.update(html.unescape(m) for m in _HTML.findall(page.read_text(encoding="utf-8")))
    for script in folder.rglob("*.js"):
        found.update(_JS.findall(script.read_text(encoding="utf-8")))
    return found
