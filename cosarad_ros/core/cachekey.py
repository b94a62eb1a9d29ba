"""Keys for on-disk caches: a hash of everything that determines the cached result -- the
inputs' content, the configuration, and the source code of the modules that compute it -- so a
cache entry is never reused after any of them changed (no version number to bump by hand).
"""
from __future__ import annotations

import hashlib
import importlib
import json
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = ["content_key", "source_fingerprint"]


@lru_cache(maxsize=64)
def source_fingerprint(*modules: str) -> str:
    """SHA-1 of the source files of ``modules`` (dotted names; a package counts with every
    ``.py`` file under it).

    Raises:
        ImportError: a module that does not exist.
    """
    h = hashlib.sha1()
    for name in sorted(modules):
        mod = importlib.import_module(name)
        path = Path(mod.__file__)
        files = sorted(path.parent.rglob("*.py")) if path.name == "__init__.py" else [path]
        for f in files:
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def content_key(*parts) -> str:
    """SHA-1 (hex, 20 characters) of ``parts``: arrays by their dtype, shape and bytes, meshes
    (objects with ``vertices`` and ``faces``) by those, anything else by its JSON (sorted keys).
    """
    h = hashlib.sha1()
    for p in parts:
        if hasattr(p, "vertices") and hasattr(p, "faces"):
            p = (np.asarray(p.vertices, dtype=np.float64), np.asarray(p.faces, dtype=np.int64))
        if isinstance(p, tuple) and all(isinstance(x, np.ndarray) for x in p):
            for x in p:
                h.update(str((x.dtype.str, x.shape)).encode())
                h.update(np.ascontiguousarray(x).tobytes())
        elif isinstance(p, np.ndarray):
            h.update(str((p.dtype.str, p.shape)).encode())
            h.update(np.ascontiguousarray(p).tobytes())
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"|")
    return h.hexdigest()[:20]
