"""Names that select files: part types, reference names and CAD labels.

A name is 1 to 128 characters from ``A-Z a-z 0-9 _ - .``, starting with a letter or digit, with
no ``..``: never a path, never whitespace or a control character (a trailing newline included).
Every place that turns a name into a file goes through :func:`check_name` (the one rule) and,
where it builds the path itself, :func:`path_in_folder` (the one resolver), so a request can only
ever reach files inside the folder it was configured with.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["NAME_PATTERN", "check_name", "path_in_folder"]

#: the whole of a valid name (use ``fullmatch``: ``$`` would accept a trailing newline)
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")


def check_name(name, *, what: str = "name") -> str:
    """Return ``name`` when it is a valid name.

    Args:
        name: the candidate (a part type, reference name or CAD label).
        what: what to call it in the error message.

    Raises:
        ValueError: not a string, empty, too long, a path, ``..``, spaces or control characters.
    """
    if not isinstance(name, str):
        raise ValueError(f"{what} must be a string, got {type(name).__name__}")
    if not NAME_PATTERN.fullmatch(name) or ".." in name:
        shown = name if len(name) <= 80 else name[:77] + "..."
        raise ValueError(f"{what} {shown!r} is not a valid name: use 1-128 letters, digits, '_', '-' or '.', "
                         "starting with a letter or digit (no path, '..', spaces or control characters)")
    return name


def path_in_folder(folder, name, *, what: str = "name", suffix: str = "") -> Path:
    """``<folder>/<name><suffix>``, refused unless it stays inside ``folder``.

    Args:
        folder: the configured folder.
        name: a name (checked with :func:`check_name`).
        what: what to call the name in error messages.
        suffix: appended to the name (an extension such as ``".pcd"``, or ``""``).

    Returns:
        the resolved path (it need not exist).

    Raises:
        ValueError: invalid name, or a symbolic link that leads outside ``folder``.
    """
    check_name(name, what=what)
    root = Path(os.path.expanduser(os.fspath(folder))).resolve()
    path = (root / f"{name}{suffix}").resolve()
    if path.parent != root:
        raise ValueError(f"{what} {name!r} leads outside {root} (symbolic link to {path}): refused")
    return path
