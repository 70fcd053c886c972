"""The package version, in one place: pyproject.toml reads it from here (hatch's version source)."""

__version__ = "1.0.0"
