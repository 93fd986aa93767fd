"""pandera (polars backend) models of poolcast's tables."""

from schemas.quarantine import QUARANTINE_COLUMNS, QUARANTINE_RULES, Quarantine
from schemas.sales_input import PANEL_COLUMNS, SalesInput, SalesPanel

__all__ = [
    "PANEL_COLUMNS",
    "QUARANTINE_COLUMNS",
    "QUARANTINE_RULES",
    "Quarantine",
    "SalesInput",
    "SalesPanel",
]
