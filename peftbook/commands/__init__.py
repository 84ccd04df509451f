"""CLI commands, one module each (see peftbook/__main__.py)."""
