"""The strict base of every config section and the patterns several sections check."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

from pydantic import BaseModel, ConfigDict

# A gate rule in gates.require: a comparison and a number.
GATE_RULE = re.compile(r"\s*(>=|<=|>|<)\s*([-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)\s*")
SQL_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")
# Azure's fsspec URLs name the container before '@' (abfs://container@account...): no secret.
_USER_IS_NOT_A_SECRET = ("abfs", "abfss", "az", "adl")
# Query keys that carry a secret in signed or tokened URLs (?sig=..., ?X-Amz-Signature=...).
# (Also what redact_url masks and what a config error's echo hides.)
SECRET_QUERY_KEYS = r"sig|signature|token|secret|pass|key|credential"
_SECRET_QUERY = re.compile(SECRET_QUERY_KEYS, re.IGNORECASE)


def refuse_url_credentials(url: str, key: str) -> str:
    """The URL unchanged, or ValueError naming `key` when any link of it (fsspec chains them
    with '::') carries a password, a user name (Azure's container@account excepted) or a
    signed query (a file or bucket URL is logged as a param and a tag; its credentials belong
    to the filesystem's own configuration). The URL itself is never echoed."""
    for link in url.split("::"):
        if "://" not in link:
            continue  # a local path
        parts = urlsplit(link)
        try:
            user, password = parts.username, parts.password
        except ValueError:  # an unparsable port: not a credential question
            user = password = None
        user_is_secret = user is not None and parts.scheme.lower() not in _USER_IS_NOT_A_SECRET
        if password is not None or user_is_secret:
            raise ValueError(
                f"{key}: a file or storage URL carries no user name or password (found '@'); "
                "give the credentials to the filesystem (environment, instance role, ~/.aws) "
                "instead"
            )
        if any(_SECRET_QUERY.search(name) for name, _ in parse_qsl(parts.query)):
            raise ValueError(
                f"{key}: a file or storage URL carries no signature or token in its query; "
                "give the credentials to the filesystem's own configuration instead"
            )
    return url


class _Strict(BaseModel):
    # extra="forbid" turns a typo in a YAML key into an error instead of a silent default.
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)
