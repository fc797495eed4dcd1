"""One settings object, read from `VIDFACTORY_*` environment variables, with embedded defaults."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ModelConfig", "Settings", "default_models"]


class ModelConfig(BaseModel):
    """One servable model: which engine runs it, where its weights are, its generation defaults."""

    id: str = Field(min_length=1, max_length=64)
    engine: str = Field(pattern=r"^(wan|wan-tiny)$")
    # A local directory (diffusers layout) or a hub id already in the local cache. Empty for wan-tiny:
    # the preset is built under data_dir/models/<id> on first use.
    path: str = ""
    default_size: str = "128x128"
    default_seconds: int = Field(default=2, ge=1, le=30)
    fps: int = Field(default=8, ge=1, le=60)
    steps: int = Field(default=4, ge=1, le=200)
    guidance_scale: float = Field(default=5.0, ge=0.0, le=30.0)
    size_min_px: int = 64
    size_max_px: int = 1280
    size_multiple_px: int = 16
    seconds_max: int = 30


def default_models() -> list[ModelConfig]:
    return [ModelConfig(id="wan-tiny", engine="wan-tiny")]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VIDFACTORY_", env_nested_delimiter="__", extra="ignore")

    data_dir: Path = Path("var")
    database_url: str = ""  # default: sqlite file under data_dir
    storage_dir: Path | None = None  # default: data_dir/storage
    admin_token: str = ""  # default: generated once into data_dir/admin_token
    models_path: Path | None = None  # where wan-tiny is built; default: data_dir/models

    models: list[ModelConfig] = Field(default_factory=default_models)

    # Admission.
    upload_bytes_max: int = 10_000_000
    hold_timeout_s: int = 24 * 3600

    # Queue and worker.
    workers_in_process: int = 1
    lease_s: float = 60.0
    heartbeat_s: float = 5.0
    poll_s: float = 0.5
    attempts_max: int = 3
    retry_backoff_s: float = 2.0
    job_timeout_s: float = 3600.0
    progress_write_interval_s: float = 0.5

    # Rate limits when no plan overrides apply (per API key, requests per minute).
    rate_limit_enabled: bool = True

    # Prompts: batches, and enhancement by an OpenAI-compatible chat endpoint (rules when no URL is set).
    batch_items_max: int = Field(default=100, ge=1, le=10_000)
    enhance_llm_url: str = Field(default="", pattern=r"^(https?://.+)?$")  # base URL, e.g. http://host:8001/v1
    enhance_llm_model: str = "qwen-plus"
    enhance_llm_api_key: SecretStr = SecretStr("")
    enhance_llm_timeout_s: float = Field(default=10.0, gt=0, le=300)

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'vidfactory.db').resolve()}"

    @cached_property
    def resolved_storage_dir(self) -> Path:
        return (self.storage_dir or self.data_dir / "storage").resolve()

    @cached_property
    def models_dir(self) -> Path:
        return (self.models_path or self.data_dir / "models").resolve()

    def model(self, model_id: str) -> ModelConfig | None:
        return next((m for m in self.models if m.id == model_id), None)
