"""``python -m services.cli`` is ``tessera``."""

from services.cli.main import main

main()
