"""`python -m services.gateway` runs the gateway (same as `tessera serve gateway`)."""

from services.cli import main

main(["serve", "gateway"])
