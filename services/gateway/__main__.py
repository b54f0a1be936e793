"""``python -m services.gateway`` runs the gateway (what ``tessera serve gateway`` does)."""

import os

from services.gateway.app import create_app
from services.gateway.settings import Settings
from shared.service import serve_service

serve_service("gateway", os.environ, Settings.from_env, create_app)
