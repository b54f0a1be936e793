"""The ``tessera`` command line: ``main.py`` wires the subcommands of the other modules."""
