"""The image's HEALTHCHECK: the daemon's /healthz on its own port (200 while it is healthy)."""

import os
import sys
import urllib.request

port = os.environ.get("STYLEBOX_WEB_LISTEN", "0.0.0.0:8750").rpartition(":")[2]
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=4) as answer:
        sys.exit(0 if answer.status == 200 else 1)
except OSError as error:
    print(error, file=sys.stderr)
    sys.exit(1)
