"""poolcast: monthly SKU demand forecasts with generalized linear mixed models.

The library is pure: no Prefect import, MLflow only inside the tracking functions, so every
stage can be used from a notebook. Subpackages follow the pipeline's stages:

- ``poolcast.glmm``: the GLMM engine (Laplace and adaptive Gauss-Hermite quadrature)
- ``poolcast.models``: the competing candidates behind one fit / predict_distribution interface
- flat modules for the rest: loading and validation, features, backtest, metrics, tracking...
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
