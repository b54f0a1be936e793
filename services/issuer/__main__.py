"""``python -m services.issuer`` runs the issuer (what ``tessera serve issuer`` does)."""

import os

from services.issuer.app import create_app
from services.issuer.settings import Settings
from shared.service import serve_service

serve_service("issuer", os.environ, Settings.from_env, create_app)
