"""dejavu: audio fingerprinting by spectral-peak pair hashes (pure numpy/scipy)."""

from .align import (
    Alignment,
    align_matches,
    lookup_steps,
    margin_to_confidence,
    match_margin,
    out_of_reach,
    rarest_hashes,
)
from .errors import DejavuError, ParameterError
from .fingerprint import fingerprint_query, fingerprint_reference, fingerprint_triplets
from .hashing import distinct
from .histogram import Histogram, histograms_of_postings, top_histograms
from .packed import FormatError, PackedFingerprint, pack_fingerprint, unpack_fingerprint
from .params import DEFAULT_MATCH, DEFAULT_PARAMS, HASH_BITS, FingerprintParams, MatchParams
from .robust import DEFAULT_ROBUST, RobustAlignment, RobustParams

__all__ = [
    "Alignment",
    "DEFAULT_MATCH",
    "DEFAULT_PARAMS",
    "DEFAULT_ROBUST",
    "DejavuError",
    "FingerprintParams",
    "FormatError",
    "HASH_BITS",
    "Histogram",
    "MatchParams",
    "PackedFingerprint",
    "ParameterError",
    "RobustAlignment",
    "RobustParams",
    "align_matches",
    "distinct",
    "fingerprint_query",
    "fingerprint_reference",
    "fingerprint_triplets",
    "histograms_of_postings",
    "lookup_steps",
    "margin_to_confidence",
    "match_margin",
    "out_of_reach",
    "pack_fingerprint",
    "rarest_hashes",
    "top_histograms",
    "unpack_fingerprint",
]
