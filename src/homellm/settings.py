"""homellm's one settings object: defaults < TOML file < ``HOMELLM_*`` environment < CLI flags.

Nothing else reads ``os.environ``. ``homellm serve --help`` and the gateway's startup log
render these fields with their descriptions.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from homellm.i18n import N_

# Loopback, the private ranges, link-local, CGNAT (Tailscale) and IPv6 unique-local.
DEFAULT_ALLOW_CIDRS = [
    "127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
    "169.254.0.0/16", "fe80::/10", "100.64.0.0/10", "fc00::/7",
]  # fmt: skip


class BackendSpec(BaseModel):
    """One ``[[backends]]`` table of config.toml: a model server in the gateway's pool."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("", max_length=64, description="what ping, health and the usage log call it (default: host)")
    url: str = Field(..., min_length=1, description="Ollama or OpenAI-compatible server, e.g. http://10.0.0.5:11434")
    priority: int = Field(0, description="higher tiers are used first; lower ones are the fallback")
    weight: float = Field(1.0, gt=0, description="share of the load among equals (2 = twice the requests)")
    max_concurrency: int = Field(0, ge=0, description="requests it runs at once; beyond, requests queue (0 = no cap)")
    kind: Literal["ollama", "openai"] | None = Field(None, description="its API (default: detected at start)")


def _default_home() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("homellm", appauthor=False))


_config_override: Path | None = None


def config_file() -> Path:
    """``--config``, else ``HOMELLM_CONFIG``, else ``HOMELLM_HOME/config.toml``."""
    if _config_override is not None:
        return _config_override
    explicit = os.environ.get("HOMELLM_CONFIG")
    if explicit:
        return Path(explicit)
    home = os.environ.get("HOMELLM_HOME")
    return (Path(home) if home else _default_home()) / "config.toml"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HOMELLM_", extra="ignore")

    home: Path = Field(default_factory=_default_home, description="config and state (keys, usage, TLS)")
    models_dir: Path | None = Field(None, description="GGUF models folder (default: HOME/models)")
    debug: bool = Field(False, description="show full tracebacks")

    # gateway
    host: str = Field("127.0.0.1", description="address the gateway binds to")
    port: int = Field(11435, ge=1, le=65535, description="gateway port")
    backend: str | None = Field(None, description="URL of an Ollama or OpenAI-compatible server")
    model: Path | None = Field(None, description="a GGUF file for the embedded engine")
    tls: bool | None = Field(None, description="serve HTTPS (default: on unless bound to loopback)")
    tls_cert: Path | None = Field(None, description="your own certificate (PEM)")
    tls_key: Path | None = Field(None, description="its private key (PEM)")
    insecure: bool = Field(False, description="allow plain HTTP or no keys beyond loopback (loudly warned)")
    allow_cidrs: list[str] = Field(default_factory=lambda: list(DEFAULT_ALLOW_CIDRS), description="client IP allowlist")
    allowed_hosts: list[str] = Field(
        default_factory=list, description="extra Host names accepted (DNS rebinding guard)"
    )
    cors_origins: list[str] = Field(default_factory=list, description="browser origins allowed to call the API")
    max_body_bytes: int = Field(16 * 1024 * 1024, gt=0, description="largest request body")
    header_timeout_s: float = Field(10.0, gt=0, description="time allowed to send request headers (slowloris)")
    body_timeout_s: float = Field(60.0, gt=0, description="time allowed to send a request body after its headers")
    send_timeout_s: float = Field(
        30.0, gt=0, description="longest a client may stop reading a stream before it is ended"
    )
    max_connections_per_ip: int = Field(
        64, ge=0, description="open connections one client address may hold; 0 = no cap"
    )
    max_connections: int = Field(2048, ge=16, description="open connections in all (beyond: 503)")
    idle_timeout_s: float = Field(300.0, gt=0, description="longest silence from the backend mid-stream")
    keep_alive_s: float = Field(5.0, gt=0, description="idle keep-alive connection timeout")
    requests_per_minute: int = Field(120, ge=0, description="per key; 0 = unlimited")
    max_streams_per_key: int = Field(4, ge=0, description="concurrent requests per key; 0 = unlimited")
    log_prompts: bool = Field(False, description="store prompt text in the usage log (off: counts only)")
    engine_ctx: int | None = Field(None, description="embedded engine context (default: chosen by the advisor)")
    engine_port: int = Field(0, ge=0, le=65535, description="embedded engine's loopback port (0 = any free one)")
    worker: str | None = Field(None, description="a paired worker that holds part of the model (serve --with)")
    ram_gib: float | None = Field(None, gt=0, description="RAM the embedded engine plans with, GiB (default: detected)")
    advertise: bool = Field(True, description="announce the gateway on the LAN with mDNS (_homellm._tcp)")

    # the pool (more than one backend): see docs/pool.md
    backends: list[BackendSpec] = Field(
        default_factory=list, description="[[backends]] tables: name, url, priority, weight, max_concurrency"
    )
    health_interval_s: float = Field(
        0.5, gt=0, description="how often each pool backend is checked (a hung one is out within this + 1 s)"
    )
    breaker_failures: int = Field(3, ge=1, description="consecutive failed requests that take a backend out")
    breaker_open_s: float = Field(30.0, gt=0, description="how long a failing backend stays out before one probe")
    fair_queueing: bool = Field(True, description="serve waiting requests round-robin per key (off: first come)")
    queue_per_key: int = Field(256, ge=0, description="requests one key may have waiting for a backend (beyond: 429)")
    queue_wait_s: float = Field(120.0, gt=0, description="longest a request waits for a backend (beyond: 429)")

    # model downloads (homellm pull)
    ollama_registry: str = Field("https://registry.ollama.ai", description="Ollama registry `homellm pull` uses")
    hf_endpoint: str = Field(
        "https://huggingface.co",
        validation_alias=AliasChoices("HF_ENDPOINT", "HOMELLM_HF_ENDPOINT"),
        description="Hugging Face endpoint (or mirror) for hf.co/ORG/REPO models",
    )
    hf_token: SecretStr | None = Field(
        None, validation_alias=AliasChoices("HF_TOKEN"), description="Hugging Face token for gated repos"
    )

    # the other machine's side
    key: SecretStr | None = Field(
        None,
        description="an existing API key for `homellm connect --key` and for commands that talk to a server by URL "
        "(HOMELLM_KEY; keys never go on the command line)",
    )

    # other programs' variables that homellm reads (doctor, env)
    ollama_host: str | None = Field(None, validation_alias=AliasChoices("OLLAMA_HOST"), description="Ollama's bind")
    ollama_origins: str | None = Field(None, validation_alias=AliasChoices("OLLAMA_ORIGINS"),
                                       description="Ollama's CORS origins")  # fmt: skip
    shell: str | None = Field(None, validation_alias=AliasChoices("SHELL"), description="the user's shell")

    @field_validator("allow_cidrs", "allowed_hosts", "cors_origins", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):  # HOMELLM_ALLOW_CIDRS=10.0.0.0/8,192.168.1.0/24
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_file())
        return (init_settings, env_settings, toml)

    @property
    def key_value(self) -> str | None:
        return self.key.get_secret_value() if self.key else None

    @property
    def models_path(self) -> Path:
        return self.models_dir or self.home / "models"

    @property
    def tls_enabled(self) -> bool:
        from homellm.serve.network import is_loopback_bind

        return self.tls if self.tls is not None else not is_loopback_bind(self.host)


@cache
def get_settings() -> Settings:
    """The settings from the environment and the config file; a bad value is one UsageError line."""
    return load_settings()


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Settings with CLI flags applied on top (``None`` means 'not given'); ``config`` is --config."""
    from pydantic import ValidationError

    from homellm.errors import UsageError
    from homellm.i18n import _

    global _config_override
    if config is not None:
        if not config.is_file():
            raise UsageError(_("no such config file: {path}").format(path=config))
        _config_override = config
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise UsageError(_describe_invalid(exc, overrides)) from None
    except Exception as exc:  # a malformed config.toml (tomllib.TOMLDecodeError), an unreadable file
        raise UsageError(_("cannot read {path}: {error}").format(path=config_file(), error=exc)) from None


_EXPECTED = {int: N_("an integer"), float: N_("a number"), bool: N_("true or false"), str: N_("a string"),
             Path: N_("a path"), list: N_("a list of strings")}  # fmt: skip


def _describe_invalid(exc: Any, overrides: dict[str, Any]) -> str:
    """One line: where the bad value came from, which key, what was given and what is expected."""
    import typing

    from homellm.i18n import _

    first = exc.errors()[0]
    key = str(first["loc"][0]) if first["loc"] else "?"
    field = Settings.model_fields.get(key)
    expected = ""
    if field is not None:
        kinds = [a for a in typing.get_args(field.annotation) if a is not type(None)] or [field.annotation]
        kind = typing.get_origin(kinds[0]) or kinds[0]
        expected = _EXPECTED.get(kind, "")
    env = f"HOMELLM_{key.upper()}"
    if overrides.get(key) is not None:
        where = _("the option for {key}").format(key=key)
    elif env in os.environ:
        where = _("the environment variable {name}").format(name=env)
    else:
        where = str(config_file())
    given = first.get("input")
    detail = _("expected {kind}").format(kind=_(expected)) if expected else str(first["msg"])
    return _("{where}: {key} = {value!r} is not valid ({detail})").format(
        where=where, key=key, value=given, detail=detail if expected else first["msg"]
    )


def config_warnings() -> list[str]:
    """Keys in the config file that no setting reads (a misspelt ``prot = 11436`` is otherwise silently ignored)."""
    import tomllib

    from homellm.errors import suggest
    from homellm.i18n import _

    path = config_file()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []  # absent, or reported as an error where the settings are read
    known = set(Settings.model_fields)
    out = []
    for key in data:
        if key not in known:
            near = suggest(key, known, limit=1)
            hint = _("; did you mean {name!r}?").format(name=near[0]) if near else ""
            out.append(_("{path}: unknown setting {key!r} is ignored{hint}").format(path=path, key=key, hint=hint))
    return out
