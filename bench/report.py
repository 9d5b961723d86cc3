"""Where every benchmark's figures go: one timestamped JSON file per run under --out."""

import json
import time
from pathlib import Path
from typing import Any


def save_report(out: Path, name: str, report: dict[str, Any]) -> Path:
    """Write `report` as out/<name>_<timestamp>.json (runs never overwrite each other)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}_{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2))
    return path
