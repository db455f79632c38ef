"""homellm's one settings object: defaults < ``HOMELLM_*`` environment < CLI flags.

Nothing else reads ``os.environ``. Later issues add the TOML layer and the
gateway's settings here.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("homellm", appauthor=False))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HOMELLM_", extra="ignore")

    home: Path = Field(default_factory=_default_home, description="config and state (HOMELLM_HOME)")
    models_dir: Path | None = Field(None, description="GGUF models folder (default: HOME/models)")
    debug: bool = Field(False, description="show full tracebacks (HOMELLM_DEBUG=1)")

    @property
    def models_path(self) -> Path:
        return self.models_dir or self.home / "models"


@cache
def get_settings() -> Settings:
    return Settings()
