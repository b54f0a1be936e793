"""Typed clients of Tessera's internal services (issuer, keys, revocation), for the gateway,
the services and the operator CLI: one session factory, one error mapping (``base``)."""

from shared.clients.base import ServiceClient, client_session
from shared.clients.issuer import IssuerClient
from shared.clients.keys import KeysClient
from shared.clients.revocation import RevocationClient

__all__ = ["IssuerClient", "KeysClient", "RevocationClient", "ServiceClient", "client_session"]
