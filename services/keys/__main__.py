"""`python -m services.keys` runs the keys service (same as `tessera serve keys`)."""

from services.cli import main

main(["serve", "keys"])
