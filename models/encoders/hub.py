"""Whether the Hugging Face hub answers, asked before a download that would otherwise retry.

Without this check an offline machine spends ~45 s in the hub client's retries at every start
that names weights it has not cached (open_clip's and CLAP's loaders both go through the hub).
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit


def reachable(timeout: float = 3.0) -> bool:
    """True when ``HF_ENDPOINT``'s host takes a connection within ``timeout`` seconds and
    ``HF_HUB_OFFLINE`` is not set."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = urlsplit(endpoint).hostname or "huggingface.co"
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}:
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False
