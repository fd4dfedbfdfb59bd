"""The crypto data hub gateway: one GraphQL API over many free public crypto data services."""

__version__ = "0.1.0"
__all__ = ["__version__"]
