"""Competing candidate models behind one interface: fit on the feature table, predict a distribution."""

from poolcast.models.forecast import KEY_COLUMNS, Forecast, quantile_column, quantiles_from_samples

__all__ = ["KEY_COLUMNS", "Forecast", "quantile_column", "quantiles_from_samples"]
