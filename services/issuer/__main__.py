"""`python -m services.issuer` runs the issuer service (same as `tessera serve issuer`)."""

from services.cli import main

main(["serve", "issuer"])
