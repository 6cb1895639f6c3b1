"""Exceptions raised by the fingerprinting algorithm."""


class DejavuError(Exception):
    """Base class of every error dejavu raises."""


class ParameterError(DejavuError):
    """A parameter or an input array is out of its allowed range."""
