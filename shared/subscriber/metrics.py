"""Prometheus metrics of every subscriber, labelled by its ``name``."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PROPAGATION = Histogram(
    "tessera_revocation_propagation_seconds",
    "From a revocation's commit (revoked_at) to its application in a subscriber",
    ["subscriber"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
LAG = Gauge(
    "tessera_subscriber_lag_seconds",
    "How far behind the revocation feed a subscriber is, in seconds",
    ["subscriber"],
)
SEQ = Gauge("tessera_subscriber_seq", "Revocation seq a subscriber is current to", ["subscriber"])
HELD = Gauge("tessera_subscriber_revocations", "Revocations a subscriber holds", ["subscriber"])
GAPS = Counter(
    "tessera_subscriber_gaps_total", "Sequence gaps filled from the feed", ["subscriber"]
)
