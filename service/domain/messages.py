"""Messages users read never show where the server keeps things: absolute paths become relative ones.

A sentence from a library (TensorFlow, Keras, h5py, the OS) often names the file it was reading: a blob
in the data directory, an extraction folder in the temporary directory. Job errors, model rejections
and problem details pass through `without_server_paths`, which rewrites a path under the data
directory relative to it (`blobs/ab/abcd...`) and any other absolute path (a temporary folder, a
library's own file) to its last component.
Standard library only: the domain, the API and the workers all use it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# Absolute paths in prose: a slash after a space, a quote, a bracket or '=' (never inside a URL or a
# word like 'and/or'), then two components or more. One component ('/docs', '/ui') is too often a route,
# and routes of the API ('/v1/...') are kept explicitly.
_PATH = re.compile(r"""(?<![\w:/.~-])(/[^\s'"`()\[\]{},;:*?<>|]+(?:/[^\s'"`()\[\]{},;:*?<>|]+)+)/?""")
_ROUTE_PREFIXES = ("/v1/", "/ui/", "/docs/", "/problems/")


def data_dir() -> Path:
    """The server's data directory, as its settings would resolve it (PARRY_DATA_DIR, else ./parry-data)."""
    return Path(os.environ.get("PARRY_DATA_DIR") or "parry-data").resolve()


def without_server_paths(text: str, *, base: Path | None = None) -> str:
    """`text` with each absolute path made relative to `base` (default: the data directory) when under it,
    else cut to its last component."""
    root = (base or data_dir()).resolve()

    def replace(match: re.Match[str]) -> str:
        raw = match.group(1).rstrip(".")  # a path that ends a sentence keeps its full stop
        if raw.startswith(_ROUTE_PREFIXES):
            return match.group(0)
        path = Path(raw)
        shown = path.relative_to(root).as_posix() if path.is_relative_to(root) and path != root else path.name
        return shown + match.group(0)[len(raw) :]

    return _PATH.sub(replace, text)
