"""The bridge's upstream: the URL is the profile's whatever the request target, the headers that travel."""

from __future__ import annotations

from pathlib import Path

import pytest

from homellm.connect.profiles import Profile
from homellm.connect.upstream import FORWARDED_REQUEST_HEADERS, Upstream, is_origin_form
from homellm.errors import GatewayError, UsageError
from homellm.serve.tls import ensure_tls


@pytest.fixture(scope="module")
def profile(tmp_path_factory: pytest.TempPathFactory) -> Profile:
    tls = ensure_tls(tmp_path_factory.mktemp("tls"), None, None)
    return Profile("pc", "https://192.168.1.20:11435", tls.fingerprint, tls.cert.read_text(), "hlm_profilekey")


TARGETS = [
    ("/api/tags", True),
    ("/v1/models/fake:small", True),
    ("/", True),
    ("http://attacker.example/steal", False),  # absolute-form, as h11 hands it over
    ("https://attacker.example:443/api/tags", False),
    ("//attacker.example/api/tags", False),  # scheme-relative
    ("/\\attacker.example", False),
    ("*", False),  # OPTIONS * HTTP/1.1
    ("attacker.example:443", False),  # CONNECT's authority-form
    ("/api/../admin", False),
    ("/v1/models/..", False),
    ("/./api/tags", False),
    ("", False),
]


@pytest.mark.parametrize(("target", "forwardable"), TARGETS)
def test_only_origin_form_paths(target: str, forwardable: bool) -> None:
    assert is_origin_form(target) is forwardable


@pytest.mark.parametrize(("target", "forwardable"), TARGETS)
def test_the_upstream_url_is_the_profiles(profile: Profile, target: str, forwardable: bool) -> None:
    upstream = Upstream(profile)
    if not forwardable:
        with pytest.raises(GatewayError) as refused:
            upstream.url_for(target)
        assert refused.value.status == 400
        return
    url = upstream.url_for(target)
    assert (url.scheme, url.host, url.port) == ("https", "192.168.1.20", 11435)
    assert url.path == target and not url.query_string


def test_model_names_with_odd_characters_stay_in_the_path(profile: Profile) -> None:
    url = Upstream(profile).url_for("/v1/models/a b?c#d@e")
    assert url.host == "192.168.1.20" and url.raw_path == "/v1/models/a%20b%3Fc%23d@e" and not url.query_string


def test_headers_that_travel(profile: Profile) -> None:
    sent = [
        (b"host", b"127.0.0.1:11434"), (b"origin", b"http://localhost:3000"), (b"referer", b"http://x/secret"),
        (b"cookie", b"session=1"), (b"authorization", b"Bearer sk-page"), (b"x-api-key", b"page"),
        (b"x-forwarded-for", b"1.2.3.4"), (b"forwarded", b"for=1.2.3.4"), (b"proxy-authorization", b"Basic x"),
        (b"content-type", b"application/json"), (b"accept", b"application/x-ndjson"), (b"user-agent", b"app/1"),
        (b"accept-language", b"ja"), (b"x-stainless-lang", b"js"), (b"connection", b"keep-alive"),
    ]  # fmt: skip
    assert Upstream(profile)._headers(sent) == [
        ("content-type", "application/json"), ("accept", "application/x-ndjson"), ("user-agent", "app/1"),
        ("accept-language", "ja"), ("x-stainless-lang", "js"), ("Authorization", "Bearer hlm_profilekey"),
    ]  # fmt: skip
    assert "authorization" not in FORWARDED_REQUEST_HEADERS and "origin" not in FORWARDED_REQUEST_HEADERS


def test_only_https_profiles_with_a_whole_fingerprint(profile: Profile, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="TLS only"):
        Upstream(Profile("pc", "http://192.168.1.20:11435", profile.fingerprint, profile.cert_pem, "k"))
    with pytest.raises(UsageError, match="damaged"):
        Upstream(Profile("pc", profile.url, profile.fingerprint[:-3], profile.cert_pem, "k"))
