"""Settings read from the environment: one parser and one type for each variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.gateway.settings import Settings as GatewaySettings
from services.issuer.settings import Settings as IssuerSettings
from shared.settings import ConfigError

GATEWAY_ENV = {"TESSERA_AMQP_URL": "amqp://127.0.0.1:9/"}
ISSUER_ENV = {
    **GATEWAY_ENV,
    "TESSERA_DATABASE_URL": "postgresql://127.0.0.1:9/unused",
    "TESSERA_TOKEN_PEPPER": "p" * 32,
}


@pytest.fixture(autouse=True)
def _certificates(pki_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both services need their internal certificates to build their settings."""
    monkeypatch.setitem(GATEWAY_ENV, "TESSERA_TLS_DIR", str(pki_dir))
    monkeypatch.setitem(ISSUER_ENV, "TESSERA_TLS_DIR", str(pki_dir))


@pytest.mark.parametrize(("raw", "seconds"), [("", 10.0), ("2.5", 2.5), ("0", 0.0), ("30", 30.0)])
def test_tenant_cache_seconds_is_the_same_number_in_the_issuer_and_the_gateway(
    raw: str, seconds: float
) -> None:
    variable = {"TESSERA_TENANT_CACHE_SECONDS": raw}
    issuer = IssuerSettings.from_env({**ISSUER_ENV, **variable}).tenant_cache_seconds
    gateway = GatewaySettings.from_env({**GATEWAY_ENV, **variable}).tenant_cache_seconds
    assert issuer == gateway == seconds
    assert type(issuer) is type(gateway) is float


@pytest.mark.parametrize("raw", ["-1", "ten"])
def test_a_bad_tenant_cache_seconds_stops_both_naming_the_variable(raw: str) -> None:
    variable = {"TESSERA_TENANT_CACHE_SECONDS": raw}
    with pytest.raises(ConfigError, match="TESSERA_TENANT_CACHE_SECONDS"):
        IssuerSettings.from_env({**ISSUER_ENV, **variable})
    with pytest.raises(ConfigError, match="TESSERA_TENANT_CACHE_SECONDS"):
        GatewaySettings.from_env({**GATEWAY_ENV, **variable})
