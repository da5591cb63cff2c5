"""pdmflow: predictive-maintenance training and release pipeline on MLflow."""

__version__ = "0.1.0"
