"""Deployment settings of the poolcast flows: ``prefect.yaml`` (work pool) and ``serve`` (``poolcast serve``)."""

__all__: list[str] = []
