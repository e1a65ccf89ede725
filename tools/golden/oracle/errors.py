"""The oracle's own failure: a wrong mapping, a missing package, a precision leak."""

from ..errors import GoldenError


class OracleError(GoldenError):
    pass


class OracleUnavailable(OracleError):
    """transformers' model cannot compute what the libraries compute for this config (the golden
    records why and holds no oracle path)."""
