"""Writing files: atomic for regular files, never replacing what a path is."""

from __future__ import annotations

import csv
import io
import os
import stat
import threading
from pathlib import Path

import pytest

from opscope.exports import to_csv, write_atomic


def test_regular_file_is_replaced_atomically_and_keeps_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")
    target.chmod(0o640)
    write_atomic(target, "new")
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert list(tmp_path.iterdir()) == [target]  # no temporary file left


def test_a_symlink_stays_a_link_and_its_target_gets_the_content(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    write_atomic(link, "new")
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text() == "new"


def test_a_link_into_another_folder_writes_there(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    real = tmp_path / "elsewhere" / "report.md"
    link = tmp_path / "report.md"
    link.symlink_to(real)  # dangling: the file is created where the link points
    write_atomic(link, "text")
    assert link.is_symlink() and real.read_text() == "text"
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == ["report.md"]


def test_a_fifo_is_written_into_not_replaced(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    write_atomic(fifo, "through the pipe")
    reader.join(timeout=10)
    assert received == [b"through the pipe"]
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_a_directory_or_a_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError):
        write_atomic(tmp_path, "x")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_atomic(tmp_path / "missing" / "out.json", "x")
    assert list(tmp_path.iterdir()) == []


def test_csv_cells_of_shapes_and_of_named_tallies() -> None:
    rows = [{"input_shape": (1, 3, 8, 8), "input_shapes": ((1, 3), (2, 4)), "kernel_size": (3, 3),
             "config.ops": (("mul", 2), ("add_", 1)), "families": (("elementwise", 3, 24),),
             "bias": None}]  # fmt: skip
    (row,) = csv.DictReader(io.StringIO(to_csv(rows)))
    assert row == {"input_shape": "1x3x8x8", "input_shapes": "1x3;2x4", "kernel_size": "3x3",
                   "config.ops": "mul:2;add_:1", "families": "elementwise:3:24", "bias": ""}  # fmt: skip
