"""What planning derives from the package's source (plugin declarations, module imports), remembered between runs so
that ``snakemake -n`` parses no source file that has not changed."""

from __future__ import annotations

import atexit
import json
import os
from pathlib import Path
from typing import Any


class DiskCache:
    """A dict of JSON values remembered in the file ``path`` (default ``$XDG_CACHE_HOME/physiossl/<name>``,
    ``~/.cache`` without it). A key is a digest of everything its value depends on, so an entry is never stale, only
    unused. The file is read at the first lookup and written atomically at exit when entries were added, keeping the
    newest ``MAX_ENTRIES``; a missing, damaged or unwritable file only means computing again."""

    MAX_ENTRIES = 4000

    def __init__(self, name: str, path: Path | None = None):
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        self.path = path or base / "physiossl" / name
        self.entries: dict[str, Any] | None = None
        self.new = 0

    def _load(self) -> dict[str, Any]:
        if self.entries is None:
            try:
                entries = json.loads(self.path.read_text())
                self.entries = entries if isinstance(entries, dict) else {}
            except (OSError, ValueError):
                self.entries = {}
        return self.entries

    def get(self, key: str) -> Any:
        """The value remembered for ``key``, or None."""
        return self._load().get(key)

    def put(self, key: str, value: Any) -> None:
        entries = self._load()
        entries.pop(key, None)
        entries[key] = value
        if self.new == 0:
            atexit.register(self.save)
        self.new += 1

    def save(self) -> None:
        entries = self._load()
        keep = dict(list(entries.items())[-self.MAX_ENTRIES:])
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(keep))
            os.replace(tmp, self.path)
        except OSError:
            pass
