"""The site description: typed models, the YAML loader and the JSON Schema."""

from mailstack.site.loader import load_site
from mailstack.site.models import Site

__all__ = ["Site", "load_site"]
