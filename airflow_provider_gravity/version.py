"""The provider's version, in a module of its own: the build and the client's User-Agent read it without the rest."""

__version__ = "0.1.0"
