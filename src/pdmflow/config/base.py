"""The strict base of every config section and the patterns several sections check."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

# A gate rule in gates.require: a comparison and a number.
GATE_RULE = re.compile(r"\s*(>=|<=|>|<)\s*([-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)\s*")
SQL_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")


class _Strict(BaseModel):
    # extra="forbid" turns a typo in a YAML key into an error instead of a silent default.
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)
