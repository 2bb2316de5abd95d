"""Typed settings. Every variable has the ``SIYU_`` prefix (``SIYU_DATABASE_URL`` ...)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from siyu.kit.crypto import declare_previous_keys


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SIYU_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default=Path("var"), description="Folder for the embedded SQLite database and files.")
    database_url: str = Field(default="", description="SQLAlchemy URL; empty means a SQLite file in data_dir.")
    redis_url: str = Field(default="", description="Optional Redis URL (flash-sale gate, rate limits, caches).")
    flash_sale_redis_prefix: str = Field(
        default="siyu:fs",
        min_length=1,
        description="Key prefix of the flash-sale gate in Redis; give each deployment sharing one Redis its own.",
    )
    secret_key: str = Field(
        default="siyu-dev-secret-change-me",
        description="Secret for deriving encryption keys of merchant credentials. Set it in production.",
    )
    secret_key_previous: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Older secret keys, still tried to open values sealed before a rotation (never to seal): "
            "comma-separated, or a JSON list when a key contains a comma. Remove them after `siyu secrets rotate`."
        ),
    )
    default_timezone: str = "Asia/Shanghai"
    env: str = Field(default="development", description="development | production | test")
    # Providers (base URLs are configurable so tests can point at local protocol peers)
    wechat_api_base: str = "https://api.weixin.qq.com"
    wechatpay_api_base: str = "https://api.mch.weixin.qq.com"
    public_base_url: str = Field(
        default="http://127.0.0.1:8000", description="Where WeChat Pay sends notifications (notify_url host)."
    )
    # Orders
    order_payment_timeout_minutes: int = 30
    order_auto_complete_days: int = 7
    aftersales_window_days: int = 7
    # Tokens
    staff_token_ttl_hours: int = 12
    customer_token_ttl_days: int = 30
    # Worker
    worker_poll_seconds: float = 0.5
    worker_lease_seconds: int = 60
    worker_batch_size: int = 20
    # Pooling
    db_pool_size: int = 20
    db_max_overflow: int = 20
    log_json: bool = True

    @field_validator("secret_key_previous", mode="before")
    @classmethod
    def _split_previous(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _declare_previous(self) -> Settings:
        # the previous keys, in order, without blanks, repeats or the current key; every box built
        # from this secret alone (the app, workers, referral.pii) then opens values sealed with them
        self.secret_key_previous = list(
            dict.fromkeys(k for k in (p.strip() for p in self.secret_key_previous) if k and k != self.secret_key)
        )
        declare_previous_keys(self.secret_key, self.secret_key_previous)
        return self

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'siyu.sqlite').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url().startswith("sqlite")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
