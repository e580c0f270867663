"""The JSON Schema of the site description, for editors (yaml-language-server) and tools."""

from __future__ import annotations

import json
from pathlib import Path

from mailstack.site.models import Site

# Written beside the site file, and named by the starter's `$schema=` line.
SCHEMA_RELPATH = ".mailstack/site.schema.json"


def schema_text() -> str:
    return json.dumps(Site.model_json_schema(mode="validation"), indent=2, ensure_ascii=False) + "\n"


def write_schema(path: Path) -> bool:
    """Write the schema if it differs; return whether the file changed."""
    text = schema_text()
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return True
