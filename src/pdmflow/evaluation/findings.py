"""What an evaluation returns to the step that logs it: metrics, tags, figures, and its part of
`evaluation_report.json`. The rooms compute; the step alone talks to MLflow."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from matplotlib.figure import Figure


@dataclass
class Findings:
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    figures: dict[str, Figure] = field(default_factory=dict)
    report: Any = None  # this evaluation's section of the evaluation report
