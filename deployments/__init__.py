"""Deployment settings of the poolcast flows: ``prefect.yaml`` (work pool) and ``serve`` (no pool)."""

__all__: list[str] = []
