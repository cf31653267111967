"""Protocol identifiers and versions. Bump the version segment on any incompatible change."""

from __future__ import annotations

from typing import Final

PROTOCOL_VERSION: Final = "1.0.0"
JOB_PROTOCOL: Final = f"/calinode/job/{PROTOCOL_VERSION}"
META_PROTOCOL: Final = f"/calinode/meta/{PROTOCOL_VERSION}"
