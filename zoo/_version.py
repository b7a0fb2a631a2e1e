"""The package version, importable without importing the zoo package's verbs."""

__version__ = "0.1.0"
