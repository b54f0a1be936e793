"""Configuration of the keys service."""

from __future__ import annotations

from dataclasses import dataclass

from shared.settings import CommonSettings, Env


@dataclass(frozen=True)
class Settings:
    common: CommonSettings

    @classmethod
    def from_env(cls, env: Env) -> Settings:
        return cls(common=CommonSettings.from_env(env, "keys"))
