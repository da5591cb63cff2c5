"""The strict base of every config section and the patterns several sections check."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

# A gate rule in gates.require: a comparison and a number.
GATE_RULE = re.compile(r"\s*(>=|<=|>|<)\s*([-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)\s*")
SQL_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")
_URL_USER = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/]*@")


def refuse_url_credentials(url: str, key: str) -> str:
    """The URL unchanged, or ValueError naming `key` when it carries a user or password (a
    file or bucket URL is logged as a param; its credentials belong to the filesystem's own
    configuration). The URL itself is never echoed."""
    if _URL_USER.match(url):
        raise ValueError(
            f"{key}: a file or storage URL carries no user name or password (found '@'); give "
            "the credentials to the filesystem (environment, instance role, ~/.aws) instead"
        )
    return url


class _Strict(BaseModel):
    # extra="forbid" turns a typo in a YAML key into an error instead of a silent default.
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)
