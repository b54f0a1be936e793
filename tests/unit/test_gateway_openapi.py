"""The gateway's OpenAPI document: a data file in the package, served unchanged."""

from __future__ import annotations

import json
from importlib.resources import files

from services.gateway.openapi import openapi
from shared.http import json_response


def test_data_file_is_the_document_the_code_built() -> None:
    # Kept only while the Python literal exists: the data file must be the same document,
    # key for key and in the same order, so /openapi.json answers the same bytes.
    text = files("services.gateway").joinpath("openapi.json").read_text()
    assert json.loads(text) == openapi()
    assert json_response(json.loads(text)).body == json_response(openapi()).body
