"""The package version, at the bottom of the package so that every layer may show it."""

__version__ = "0.1.0"
