"""Timing, one way for every script: `median_seconds` (calls alternated,
medians after warm-up) is the library's, which `gsm_optax.slim` uses to
measure its speed-up; the scripts import it from here."""

from gsm_optax._src.timing import median_seconds  # pylint: disable=unused-import

__all__ = ('median_seconds',)
