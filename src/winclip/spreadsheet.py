"""CSV cells that a spreadsheet opens as text, never as a formula (OWASP "CSV injection")."""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what Excel, LibreOffice and Sheets read as a formula


def safe_cell(value: object) -> object:
    """A text cell starting like a formula, prefixed with `'` (shown as text); numbers and other text unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value
