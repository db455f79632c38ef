"""The bridge's Host guard and origin policy, rule by rule, against Ollama's own behaviour.

Expected values follow Ollama's ``envconfig.AllowedOrigins`` and gin-contrib/cors v1.7.2 as
``server/routes.go`` configures it (AllowWildcard, AllowBrowserExtensions, its AllowHeaders).
"""

from __future__ import annotations

import pytest

from homellm.connect.browser_guard import ALLOWED_HEADERS, HostGuard, OriginPolicy, split_list
from homellm.errors import UsageError

# (origin, allowed by Ollama's default list)
DEFAULT_ORIGINS = [
    ("http://localhost", True),
    ("https://localhost", True),
    ("http://localhost:3000", True),
    ("https://localhost:8443", True),
    ("http://127.0.0.1:5173", True),
    ("https://127.0.0.1", True),
    ("http://0.0.0.0:8080", True),
    ("app://obsidian.md", True),
    ("file://", True),
    ("tauri://localhost", True),
    ("vscode-webview://1abc", True),
    ("vscode-file://vscode-app", True),
    ("http://evil.example", False),
    ("https://evil.example:443", False),
    ("http://localhost.evil.example", False),  # the wildcard is "http://localhost:*", a port only
    ("http://127.0.0.1.nip.io", False),
    ("http://[::1]:3000", False),  # not in Ollama's list
    ("http://rebind.test:11434", False),
    ("null", False),  # sandboxed frames, some file:// pages
    ("chrome-extension://abcdef", False),  # allowed schemes only matter when listed
    ("HTTP://LOCALHOST", False),  # the list is lower-cased, the header compared as sent
    ("", False),
]


@pytest.mark.parametrize(("origin", "allowed"), DEFAULT_ORIGINS)
def test_default_origins_are_ollamas(origin: str, allowed: bool) -> None:
    assert OriginPolicy().allows(origin) is allowed


EXTRA_ORIGINS = [
    ("https://chat.example.com", True),
    ("https://chat.example.com:8443", False),
    ("https://a.trusted.example", True),  # "*.trusted.example": a suffix
    ("http://trusted.example", False),
    ("chrome-extension://abcdef", True),  # "chrome-extension://*": a prefix
    ("https://app.example.org/x", False),
    ("https://app.example.org", True),  # "https://app.*.org": prefix and suffix
    ("http://localhost:3000", True),  # the defaults stay
    ("http://evil.example", False),
]


@pytest.mark.parametrize(("origin", "allowed"), EXTRA_ORIGINS)
def test_listed_origins_and_wildcards(origin: str, allowed: bool) -> None:
    policy = OriginPolicy(
        ["https://chat.example.com", "*.trusted.example", "chrome-extension://*", "https://app.*.org"]
    )
    assert policy.allows(origin) is allowed


def test_a_lone_star_allows_every_origin_and_says_so() -> None:
    policy = OriginPolicy(["*"])
    assert policy.allows("http://evil.example") and policy.allow_all
    assert policy.response_headers("http://evil.example") == [("Access-Control-Allow-Origin", "*")]
    assert ("Access-Control-Allow-Origin", "*") in policy.preflight_headers("http://evil.example")


@pytest.mark.parametrize("bad", ["chat.example.com", "localhost:3000", "ftp://files.example", "http://*.a.*"])
def test_origins_ollama_would_refuse_are_refused(bad: str) -> None:
    with pytest.raises(UsageError, match="origin"):
        OriginPolicy([bad])


@pytest.mark.parametrize(
    ("text", "entries"),
    [
        (None, []),
        ("", []),
        ("http://a.example", ["http://a.example"]),
        ("  'http://a.example,https://b.example'  ", ["http://a.example", "https://b.example"]),
        ('"app://*"', ["app://*"]),
        ("http://a.example, http://b.example,", ["http://a.example", "http://b.example"]),
    ],
)
def test_split_list_reads_ollama_origins_like_envconfig(text: str | None, entries: list[str]) -> None:
    assert split_list(text) == entries


@pytest.mark.parametrize(
    ("origin", "host", "cross"),
    [
        (None, "127.0.0.1:11434", False),
        ("http://127.0.0.1:11434", "127.0.0.1:11434", False),  # same origin: not CORS (gin-contrib/cors)
        ("https://localhost:11434", "localhost:11434", False),
        ("http://rebind.test:11434", "rebind.test:11434", False),  # ... which is why the Host guard exists
        ("http://localhost:3000", "127.0.0.1:11434", True),
        ("null", "127.0.0.1:11434", True),
    ],
)
def test_same_origin_requests_are_not_cors(origin: str | None, host: str, cross: bool) -> None:
    assert OriginPolicy.is_cross_origin(origin, host) is cross


def test_preflight_headers_are_ollamas() -> None:
    headers = OriginPolicy().preflight_headers("http://localhost:3000")
    assert headers == [
        ("Access-Control-Allow-Methods", "GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS"),
        ("Access-Control-Allow-Headers", ",".join(ALLOWED_HEADERS)),
        ("Access-Control-Max-Age", "43200"),
        ("Vary", "Origin"),
        ("Vary", "Access-Control-Request-Method"),
        ("Vary", "Access-Control-Request-Headers"),
        ("Access-Control-Allow-Origin", "http://localhost:3000"),
    ]
    assert ALLOWED_HEADERS[:6] == ("Authorization", "Content-Type", "User-Agent", "Accept", "X-Requested-With",
                                   "Openai-Beta")  # fmt: skip
    assert len(ALLOWED_HEADERS) == 18 and all(h.startswith("X-Stainless-") for h in ALLOWED_HEADERS[6:])
    assert OriginPolicy().response_headers("http://localhost:3000") == [
        ("Vary", "Origin"),
        ("Access-Control-Allow-Origin", "http://localhost:3000"),
    ]


# (Host header, allowed by default)
HOSTS = [
    (None, True),  # HTTP/1.0 without Host: not a browser
    ("localhost", True),
    ("localhost:11434", True),
    ("LOCALHOST:11434", True),
    ("app.localhost:11434", True),
    ("127.0.0.1:11434", True),
    ("127.1.2.3", True),
    ("[::1]:11434", True),
    ("[::ffff:127.0.0.1]:11434", True),
    ("0.0.0.0:11434", True),
    ("[::]:11434", True),
    ("evil.example:11434", False),
    ("rebind.test:11434", False),
    ("localhost.evil.example", False),
    ("localhost.:11434", False),
    ("127.0.0.1.nip.io:11434", False),
    ("192.168.1.5:11434", False),  # a LAN address: the bridge is not on it
    ("myhost.local:11434", False),  # mDNS: anyone on the network can answer (Ollama allows it)
    ("service.internal", False),
    ("[::1", False),
    ("a" * 300, False),
]


@pytest.mark.parametrize(("host", "allowed"), HOSTS)
def test_host_guard(host: str | None, allowed: bool) -> None:
    assert HostGuard().allows(host) is allowed


def test_allowed_hosts_add_names() -> None:
    guard = HostGuard(["myhost.local", "Laptop.Example:11434", "192.168.1.5"])
    assert guard.extra == {"myhost.local", "laptop.example", "192.168.1.5"}
    for host in ("myhost.local:11434", "laptop.example", "192.168.1.5:11434", "localhost"):
        assert guard.allows(host), host
    assert not guard.allows("evil.example:11434")


@pytest.mark.parametrize("bad", ["*", "*.example.com", "http://host.example", "a b", "user@host"])
def test_allowed_hosts_take_names_only(bad: str) -> None:
    with pytest.raises(UsageError, match="--allowed-hosts"):
        HostGuard([bad])
