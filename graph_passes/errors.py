"""The one error type the converter raises for problems the user can fix (bad model, bad options)."""
from __future__ import annotations


class ConversionError(ValueError):
    """A model or an option the converter cannot accept; the message says what and why, in one line."""
