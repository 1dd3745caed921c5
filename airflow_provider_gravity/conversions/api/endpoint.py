"""Where Gravity's Conversions API is when a connection names no host: the one place its address is written."""

from __future__ import annotations

#: The API root the client sends to when the connection's host is empty.
DEFAULT_BASE_URL = "https://api.trygravity.ai"
#: Its host, as the asset URI and the lineage name it (``gravity://api.trygravity.ai/...``).
DEFAULT_HOST = DEFAULT_BASE_URL.partition("://")[2]
