"""Configuration of the issuer service."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.settings import (
    CommonSettings,
    ConfigError,
    Env,
    get_int,
    get_secret,
    get_tenant_cache_seconds,
    service_url,
)
from shared.tokens import Pepper


@dataclass(frozen=True)
class Settings:
    common: CommonSettings
    pepper: Pepper = field(repr=False)
    keys_url: str
    refresh_grace_seconds: int
    tenant_cache_seconds: float

    @classmethod
    def from_env(cls, env: Env) -> Settings:
        try:
            pepper = Pepper.parse(get_secret(env, "TESSERA_TOKEN_PEPPER"))
        except ValueError as exc:
            raise ConfigError(f"TESSERA_TOKEN_PEPPER: {exc}") from None
        return cls(
            common=CommonSettings.from_env(env, "issuer"),
            pepper=pepper,
            keys_url=service_url(env, "keys"),
            refresh_grace_seconds=get_int(env, "TESSERA_REFRESH_GRACE_SECONDS", 10, minimum=0),
            tenant_cache_seconds=get_tenant_cache_seconds(env),
        )
