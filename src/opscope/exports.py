"""Exports: JSON, CSV and atomic writes of any rendered text."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import stat
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def to_json(data: Any) -> str:
    """Pretty JSON with a final newline; integers stay exact."""
    return json.dumps(data, indent=2) + "\n"


def _csv_cell(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        if value and isinstance(value[0], (list, tuple)):  # several shapes: 1x3x8x8;1x3x8x8
            return ";".join(map(_csv_cell, value))
        if all(isinstance(item, int) for item in value):  # a shape or kernel size: 1x3x224x224
            return "x".join(map(str, value))
        return ":".join(map(str, value))  # a named tally: mul:2 (an operator, its calls)
    return "" if value is None else value


def to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows of mappings as CSV: one column per key, in order of first appearance (rows of
    different layer families have different settings), blank where a row has no value."""
    if not rows:
        return ""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: _csv_cell(value) for key, value in row.items()} for row in rows)
    return buffer.getvalue()


def _mode_for(target: Path) -> int:
    """The mode a plainly created file would get: the existing file's, or 0666 less umask."""
    if target.exists():
        return target.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _is_special(path: Path) -> bool:
    """Whether ``path`` (its symlinks followed) exists and is not a regular file: a device, a
    FIFO, a socket, a terminal, ``/dev/stdout``."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def write_atomic(path: str | os.PathLike[str], content: str | bytes) -> None:
    """Write ``content`` (text as UTF-8, or bytes) to ``path``, never replacing what the path
    is.

    A regular file (or a path that does not exist yet) is written through a temporary file
    in the same folder and a rename, so an interrupted write never leaves a truncated file
    behind; a symbolic link is followed first, so the link stays a link and its target gets
    the content. Anything that is not a regular file (a device such as ``/dev/stdout``, a
    FIFO, a socket) is written straight into, as a shell's ``>`` would.

    Raises:
        OSError: the folder does not exist or is not writable (nothing is left behind).
    """
    data = content.encode("utf-8") if isinstance(content, str) else content
    given = Path(path)
    if _is_special(given):
        with open(given, "wb") as stream:
            stream.write(data)
        return
    target = Path(os.path.realpath(given))  # a link's target; a dangling link's future file
    folder = target.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"folder {str(given.parent)!r} does not exist")
    if target.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(given))
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.chmod(temporary, _mode_for(target))  # mkstemp makes it private (0600)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
