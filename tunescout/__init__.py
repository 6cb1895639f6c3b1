"""TuneScout: a self-hosted music recognition service."""

__version__ = "1.0.0"
