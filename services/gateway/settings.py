"""Configuration of the gateway."""

from __future__ import annotations

from dataclasses import dataclass

from shared.settings import (
    CommonSettings,
    Env,
    IPNetwork,
    get_float,
    get_int,
    get_networks,
    get_str,
    get_tenant_cache_seconds,
    service_url,
)


@dataclass(frozen=True)
class Settings:
    common: CommonSettings
    issuer_url: str
    keys_url: str
    revocation_url: str
    # Who may use the jobmanager API, and whose X-Forwarded-For we believe.
    internal_networks: tuple[IPNetwork, ...]
    trusted_proxies: tuple[IPNetwork, ...]
    default_tenant: str
    jobmanager_default_ttl: int
    databricks_default_lifetime: int
    opaque_cache_seconds: float
    tenant_cache_seconds: float
    unknown_tenant_cache_seconds: float
    # Requests per second (and burst) per principal and per tenant, in this replica; 0: off.
    principal_rate: float
    principal_burst: float
    tenant_rate: float
    tenant_burst: float
    # Failed authentications and unknown tenants per second (and burst) per client address,
    # before authentication; 0: off.
    failure_rate: float
    failure_burst: float
    # The public base URL: Lagrello paging links start with it, never with the request's Host.
    public_url: str

    @classmethod
    def from_env(cls, env: Env) -> Settings:
        return cls(
            common=CommonSettings.from_env(env, "gateway"),
            issuer_url=service_url(env, "issuer"),
            keys_url=service_url(env, "keys"),
            revocation_url=service_url(env, "revocation"),
            internal_networks=get_networks(env, "TESSERA_INTERNAL_NETWORKS", "127.0.0.0/8,::1/128"),
            trusted_proxies=get_networks(env, "TESSERA_TRUSTED_PROXIES", ""),
            default_tenant=get_str(env, "TESSERA_DEFAULT_TENANT", "dev"),
            jobmanager_default_ttl=get_int(env, "TESSERA_JOBMANAGER_TTL", 30 * 86400, minimum=1),
            databricks_default_lifetime=get_int(
                env, "TESSERA_DATABRICKS_LIFETIME", 2 * 365 * 86400, minimum=1
            ),
            opaque_cache_seconds=get_float(env, "TESSERA_AUTH_CACHE_SECONDS", 5.0),
            tenant_cache_seconds=get_tenant_cache_seconds(env),
            unknown_tenant_cache_seconds=get_float(
                env, "TESSERA_UNKNOWN_TENANT_CACHE_SECONDS", 3.0
            ),
            principal_rate=get_float(env, "TESSERA_RATE_LIMIT_PRINCIPAL", 200.0),
            principal_burst=get_float(env, "TESSERA_RATE_LIMIT_PRINCIPAL_BURST", 400.0),
            tenant_rate=get_float(env, "TESSERA_RATE_LIMIT_TENANT", 2000.0),
            tenant_burst=get_float(env, "TESSERA_RATE_LIMIT_TENANT_BURST", 4000.0),
            failure_rate=get_float(env, "TESSERA_RATE_LIMIT_FAILURES", 5.0),
            failure_burst=get_float(env, "TESSERA_RATE_LIMIT_FAILURES_BURST", 100.0),
            public_url=get_str(env, "TESSERA_PUBLIC_URL", "http://localhost:8080").rstrip("/"),
        )
