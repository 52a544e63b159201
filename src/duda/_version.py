"""The package version (a leaf module: the CLI and run metadata read it without importing duda's API)."""

__version__ = "0.1.0"
