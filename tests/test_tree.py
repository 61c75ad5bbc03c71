"""The per-module tree: every ancestor holds what ran inside it, and the root the total."""

from __future__ import annotations

import json

import pytest
import torch
from rich.console import Console
from torch import nn

from opscope import Profiler, zoo
from opscope.cli import main
from opscope.report import BLOCK_PATHS

MODELS = ["resnet18", "mobilenet_v3_small", "efficientnet_b0", "densenet121", "googlenet",
          "inception_v3", "vit_b_16", "swin_t", "convnext_tiny", "regnet_y_400mf", "maxvit_t",
          "shufflenet_v2_x0_5"]  # fmt: skip


@pytest.fixture(scope="module", params=MODELS)
def profiled(request: pytest.FixtureRequest) -> Profiler:
    model = zoo.ZooModel(request.param, "classification")
    net = zoo.build(model, "meta")  # the RegNets compute while building: zoo knows how
    (x,) = zoo.example_input(model, zoo.published_input(model), "meta").args
    with torch.inference_mode(), Profiler(net) as p:
        net(x)
    return p


@pytest.mark.parametrize("depth", [0, 1, 2, 3, None])
def test_every_level_adds_up_to_the_total(profiled: Profiler, depth: int | None) -> None:
    report = profiled.report
    nodes = report.by_module(depth)
    roots = [node for node in nodes if node.depth == 0 or node.path in BLOCK_PATHS]
    assert sum(node.ops for node in roots) == report.total_ops
    assert sum(node.macs for node in roots) == report.total_macs
    assert nodes[0].params == report.total_params  # each parameter once
    # Each node holds exactly its children's work and its own records.
    by_path = {node.path: node for node in report.by_module()}
    for node in nodes:
        if node.path in BLOCK_PATHS:
            continue
        children = [
            other for other in by_path.values()
            if other.depth == node.depth + 1 and other.path.startswith(f"{node.path}." if node.path else "")
            and other.path not in BLOCK_PATHS
        ]  # fmt: skip
        own = sum(record.ops for record in report.records if record.name == node.path)
        assert node.ops == own + sum(child.ops for child in children)
        assert depth is None or node.depth <= depth


def test_a_module_called_twice_and_a_shared_one_count_every_call() -> None:
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    with Profiler(model) as p:
        model(torch.randn(2, 4))
    nodes = {node.path: node for node in p.report.by_module()}
    assert nodes["0"].calls == 2 and nodes["0"].ops == 2 * p.records[0].ops
    assert nodes[""].ops == p.total_ops and nodes[""].params == 4 * 4 + 4


def test_every_format_shows_the_tree(tmp_path, capsys) -> None:
    assert main(["profile", "resnet18", "--depth", "1", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    (root,) = data["tree"]
    assert root["path"] == "" and root["ops"] == data["total_ops"]
    assert [child["path"] for child in root["children"]][:2] == ["conv1", "bn1"]
    assert all(child["children"] == [] for child in root["children"])
    assert main(["profile", "resnet18", "--depth", "1", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("model,inputs,device,path,module_type,depth")
    # each level's indentation as the format keeps it (markdown trims a cell's spaces, HTML
    # collapses them and LaTeX ignores them: the levels showed flush)
    for fmt, marker, nested in (
        ("markdown", "| Module |", "| \u00a0\u00a0\u00a0\u00a0layer1.0 |"),
        ("latex", "Module & Type", "~~~~layer1.0 &"),
        ("html", "<th>Module</th>", "<td>&nbsp;&nbsp;&nbsp;&nbsp;layer1.0</td>"),
        ("table", "Module", "    layer1.0 "),
    ):
        assert main(["profile", "resnet18", "--depth", "2", "--format", fmt]) == 0
        text = capsys.readouterr().out
        assert marker in text and nested in text and "layer1.0.conv1" not in text
    assert main(["profile", "resnet18", "--depth", "1", "--top", "3"]) == 2


@pytest.mark.parametrize("option", [["--top", "3"], ["--sort", "ops"], ["--bytes"], ["--time", "--device", "cpu"],
                                    ["--time", "--device", "cpu", "--format", "csv"]])  # fmt: skip
def test_what_the_tree_cannot_show_is_refused(capsys, option: list[str]) -> None:
    # the tree has no bytes or time columns and keeps the model's order: refused, not dropped
    assert main(["profile", "resnet18", "--depth", "1", *option]) == 2
    assert "--depth shows the model's tree" in capsys.readouterr().err


def test_times_go_with_the_tree_where_they_are_shown(capsys) -> None:
    # each layer's in the JSON beside the tree; a training step's under it
    argv = ["profile", "resnet18", "--depth", "1", "--time", "--device", "cpu", "--input", "2x3x32x32"]
    assert main([*argv, "--repeat", "1", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["tree"] and all(layer["time_ns"] is not None for layer in data["layers"])
    assert main([*argv, "--train", "--repeat", "1"]) == 0
    assert "One training step" in capsys.readouterr().out


def small() -> Profiler:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    with Profiler(model) as p:
        model(torch.randn(2, 4))
    return p


@pytest.mark.parametrize("options", [{"top": 3}, {"sort": "ops"}, {"show_bytes": True}])
def test_the_api_refuses_what_the_tree_cannot_show(options: dict) -> None:
    p = small()
    with pytest.raises(ValueError, match="depth shows the model's tree"):
        p.print(depth=1, **options)
    with pytest.raises(ValueError, match="depth shows the model's tree"):
        p.report.print(depth=1, **options)


@pytest.mark.parametrize("depth", [1.5, True, "1", -1])
def test_depth_must_be_a_whole_number(depth: object) -> None:
    with pytest.raises(ValueError, match="depth must be a whole number, 0 or more"):
        small().report.by_module(depth=depth)  # type: ignore[arg-type]


@pytest.mark.parametrize("top", [1.5, True, "3", 0])
def test_top_must_be_a_whole_number_of_rows(top: object) -> None:
    with pytest.raises(ValueError, match="top must be a positive number of rows"):
        small().print(top=top)  # type: ignore[arg-type]


def test_top_may_be_any_integer_type() -> None:
    numpy = pytest.importorskip("numpy")
    console = Console(record=True, width=120)
    small().print(top=numpy.int64(1), console=console)
    assert "… 1 more row " in console.export_text()
