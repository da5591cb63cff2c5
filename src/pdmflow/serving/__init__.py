"""Serving: load a released model and score raw telemetry (scorer.py), one device or a fleet.

    from pdmflow.serving import FailureScorer
    scorer = FailureScorer.load("models:/pdmflow-default-failure/Production")

batch.py scores a whole fleet; health.py says how healthy each device's sensors look.
"""

from pdmflow.serving.scorer import SPEC_PATH, FailureScorer, load_feature_spec

__all__ = ["SPEC_PATH", "FailureScorer", "load_feature_spec"]
