"""`python -m services.revocation` runs the revocation service (`tessera serve revocation`)."""

from services.cli import main

main(["serve", "revocation"])
