"""TuneScout: a self-hosted music recognition service."""

__version__ = "0.1.0"
