"""trustdiff: audit a compressed text classifier against its reference for trust-equivalence."""

__version__ = "0.1.0"
