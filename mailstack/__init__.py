"""mailstack: run your own mail server from one typed site description."""

__version__ = "0.1.0"
