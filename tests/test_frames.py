"""Reports as pandas DataFrames, and as a notebook shows them."""

from __future__ import annotations

import sys

import pytest
import torch
import torchvision

from opscope import Profiler
from opscope.frames import FrameDependencyError

pandas = pytest.importorskip("pandas", reason="pandas is not installed (pip install 'opscope[pandas]')")


@pytest.fixture(scope="module")
def profiled() -> Profiler:
    model = torchvision.models.resnet18(weights=None).eval()
    with torch.inference_mode(), Profiler(model) as p:
        model(torch.randn(1, 3, 64, 64))
    return p


def test_one_row_per_record_with_typed_columns(profiled: Profiler) -> None:
    frame = profiled.report.to_pandas()
    assert len(frame) == len(profiled.records)
    assert list(frame["name"][:3]) == ["conv1", "bn1", "relu"]
    assert frame["ops"].dtype == "int64" and int(frame["ops"].sum()) == profiled.total_ops
    assert int(frame["macs"].sum()) == profiled.report.total_macs
    assert frame["input_shape"][0] == "1×3×64×64"
    assert frame.loc[frame["family"] == "functional", "type"].str.startswith("BasicBlock").all()
    assert set(frame["phase"]) == {"forward"}


def test_a_training_step_has_its_phases() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with Profiler(model) as p:
        model(torch.randn(3, 4)).sum().backward()
        optimizer.step()
    frame = p.report.to_pandas()
    by_phase = frame.groupby("phase", sort=False)["ops"].sum().to_dict()
    assert by_phase == {phase: ops for phase, (ops, _) in p.report.by_phase().items()}


def test_the_tree_is_indexed_by_path(profiled: Profiler) -> None:
    tree = profiled.report.tree_to_pandas(depth=1)
    assert tree.index[0] == "" and tree.loc["", "ops"] == profiled.total_ops
    assert tree.loc["layer1", "module_type"] == "Sequential"
    assert tree["depth"].max() == 1 and tree.loc["", "share"] == 1.0


def test_a_notebook_shows_the_tables(profiled: Profiler) -> None:
    html = profiled._repr_html_()
    assert html.startswith("<table>") and "<th>Layer</th>" in html and "By type" in html
    assert "<html" not in html  # a fragment, not a page


def test_without_pandas_the_error_says_how_to_install_it(profiled: Profiler, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas raises ImportError
    with pytest.raises(FrameDependencyError, match=r"pip install 'opscope\[pandas\]'"):
        profiled.report.to_pandas()
