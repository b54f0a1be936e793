"""Configuration of the keys service."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.keys.domain import RotationLimits
from shared.settings import CommonSettings, ConfigError, Env, get_int, get_secret, get_str


@dataclass(frozen=True)
class Settings:
    common: CommonSettings
    # Every key-encryption key this service can open: the current one first, then previous
    # ones kept while `tessera keys rewrap` moves the keys off them.
    keks: tuple[str, ...] = field(repr=False)
    public_url: str
    jwks_max_age: int
    activation_delay: int
    rotation_period: int
    maintenance_interval: float
    rotation_limits: RotationLimits = field(default_factory=RotationLimits)

    @classmethod
    def from_env(cls, env: Env) -> Settings:
        current = get_secret(env, "TESSERA_KEK")
        previous = get_secret(env, "TESSERA_KEK_PREVIOUS", required=False)
        keks = (current, *(p.strip() for p in previous.split(",") if p.strip()))
        if any(len(k) < 32 for k in keks):
            raise ConfigError("TESSERA_KEK must be at least 32 characters of high-entropy secret")
        max_age = get_int(env, "TESSERA_JWKS_MAX_AGE", 300, minimum=0)
        return cls(
            common=CommonSettings.from_env(env, "keys"),
            keks=keks,
            public_url=get_str(env, "TESSERA_PUBLIC_URL", "http://localhost:8080").rstrip("/"),
            jwks_max_age=max_age,
            # Publish-before-sign: a new key signs only once every cached JWKS has seen it.
            activation_delay=get_int(env, "TESSERA_KEY_ACTIVATION_DELAY", max_age, minimum=0),
            rotation_period=get_int(env, "TESSERA_KEY_ROTATION_PERIOD", 30 * 86400, minimum=0),
            maintenance_interval=float(get_int(env, "TESSERA_KEY_MAINTENANCE_MS", 1000, minimum=10))
            / 1000,
            rotation_limits=RotationLimits(
                per_hour=get_int(env, "TESSERA_KEY_ROTATIONS_PER_HOUR", 10, minimum=0),
                max_published=get_int(env, "TESSERA_MAX_PUBLISHED_KEYS", 20, minimum=0),
            ),
        )
