"""``python -m services.revocation``: the revocation service (``tessera serve revocation``)."""

import os

from services.revocation.app import create_app
from services.revocation.settings import Settings
from shared.service import serve_service

serve_service("revocation", os.environ, Settings.from_env, create_app)
