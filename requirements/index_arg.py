"""Print `--extra-index-url URL` when URL's host answers within 3 s, else nothing (pip then finds the CPU torch
wheel through its own configuration, e.g. a find-links folder). An unreachable index would otherwise cost pip
several retries for every package it resolves."""

import socket
import sys
from urllib.parse import urlparse

url = sys.argv[1] if len(sys.argv) > 1 else ""
if url:
    u = urlparse(url)
    try:
        socket.create_connection((u.hostname, u.port or (443 if u.scheme == "https" else 80)), timeout=3).close()
        print(f"--extra-index-url {url}")
    except OSError:
        print(f"note: {u.hostname} unreachable; torch comes from pip's own configuration", file=sys.stderr)
