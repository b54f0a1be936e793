"""``python -m services.keys`` runs the keys (what ``tessera serve keys`` does)."""

import os

from services.keys.app import create_app
from services.keys.settings import Settings
from shared.service import serve_service

serve_service("keys", os.environ, Settings.from_env, create_app)
