"""``tessera serve SERVICE``: one service in the foreground (what its container runs)."""

from __future__ import annotations

import argparse
import importlib
import os

from shared.service import serve_service


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the named service until SIGINT/SIGTERM (as ``python -m services.<service>``)."""
    app = importlib.import_module(f"services.{args.service}.app")
    settings = importlib.import_module(f"services.{args.service}.settings")
    serve_service(args.service, os.environ, settings.Settings.from_env, app.create_app)
    return 0
