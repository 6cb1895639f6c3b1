"""dejavu: audio fingerprinting by spectral-peak pair hashes (pure numpy/scipy)."""
from .align import Alignment, align_matches, margin_to_confidence, match_margin
from .errors import DejavuError, ParameterError
from .fingerprint import fingerprint_query, fingerprint_reference
from .params import DEFAULT_MATCH, DEFAULT_PARAMS, FingerprintParams, MatchParams

__all__ = ["Alignment", "DEFAULT_MATCH", "DEFAULT_PARAMS", "DejavuError", "FingerprintParams",
           "MatchParams", "ParameterError", "align_matches", "fingerprint_query",
           "fingerprint_reference", "margin_to_confidence", "match_margin"]
