"""pdmflow: predictive-maintenance training and release pipeline on MLflow."""

import os

__version__ = "0.1.0"

# OpenMP (LightGBM's and scikit-learn's threads) busy-waits between parallel regions by
# default. When anything else shares the cores (a tracking server, a second tuning worker, a
# scheduler running two tenants) the spinning threads starve it and each other: three
# LightGBM fits took 162 s instead of 11 s on this 2-core machine under load. Waiting
# passively costs little when alone. Set before LightGBM loads; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
