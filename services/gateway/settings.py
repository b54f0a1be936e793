"""Configuration of the gateway."""

from __future__ import annotations

from dataclasses import dataclass

from shared.settings import CommonSettings, Env, service_url


@dataclass(frozen=True)
class Settings:
    common: CommonSettings
    issuer_url: str
    keys_url: str
    revocation_url: str

    @classmethod
    def from_env(cls, env: Env) -> Settings:
        return cls(
            common=CommonSettings.from_env(env, "gateway"),
            issuer_url=service_url(env, "issuer"),
            keys_url=service_url(env, "keys"),
            revocation_url=service_url(env, "revocation"),
        )
