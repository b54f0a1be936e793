"""Configuration of the revocation service."""

from __future__ import annotations

from dataclasses import dataclass

from shared.settings import CommonSettings, Env, get_float, service_url


@dataclass(frozen=True)
class Settings:
    common: CommonSettings
    # Where selectors other than a verified JWT are resolved to token records.
    issuer_url: str
    # How often a replica tries to prune revocations of expired tokens.
    prune_interval: float = 60.0
    # Revocations are kept this long past the token's expiry, so a verifier whose clock runs
    # a little behind never sees a revoked token come back to life.
    prune_grace: float = 300.0

    @classmethod
    def from_env(cls, env: Env) -> Settings:
        return cls(
            common=CommonSettings.from_env(env, "revocation"),
            issuer_url=service_url(env, "issuer"),
            prune_interval=get_float(env, "TESSERA_REVOCATION_PRUNE_INTERVAL", 60.0, minimum=0.1),
            prune_grace=get_float(env, "TESSERA_REVOCATION_PRUNE_GRACE", 300.0),
        )
