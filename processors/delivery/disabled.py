"""Endpoints disabled after a 410 Gone. Kept in a JSON file under the state dir so a restart
keeps them off; an endpoint comes back when its URL or secret changes in the program.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from processors.delivery.routing import Endpoint


def _fingerprint(ep: Endpoint) -> str:
    return f"{ep.url}|{','.join(ep.secrets)}"


class DisabledTable:
    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._rows: dict[str, dict] = {}
        if path and path.exists():
            self._rows = json.loads(path.read_text())

    def disable(self, ep: Endpoint, reason: str) -> None:
        self._rows[ep.key] = {
            "fingerprint": _fingerprint(ep),
            "reason": reason,
            "at": int(time.time() * 1000),
        }
        self._save()

    def is_disabled(self, ep: Endpoint) -> bool:
        row = self._rows.get(ep.key)
        if row is None:
            return False
        if row["fingerprint"] != _fingerprint(ep):  # reconfigured: try again
            del self._rows[ep.key]
            self._save()
            return False
        return True

    def rows(self) -> dict[str, dict]:
        return dict(self._rows)

    def _save(self) -> None:
        if self._path:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._rows))
            tmp.replace(self._path)
