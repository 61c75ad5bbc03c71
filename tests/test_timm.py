"""timm's models by name (``timm:convnext_tiny``): names read from timm's source, builds
without weights at each model's own input size, and exact counts (the ``timm`` extra)."""

from __future__ import annotations

import json

import pytest

timm = pytest.importorskip("timm")

import torch
from torch.utils.flop_counter import FlopCounterMode

from opscope import catalogue, zoo
from opscope.cli import main
from opscope.compare import prepare, profile_model

# One architecture of each family the issue names; regnety's builder computes its widths
# with real tensors, as torchvision's RegNets do.
FAMILIES = [
    "resnet50", "convnext_tiny", "efficientnet_b0", "vit_base_patch16_224",
    "swin_tiny_patch4_window7_224", "regnety_004", "mobilenetv3_large_100",
]  # fmt: skip


def test_the_names_are_timms_own_list() -> None:
    assert list(catalogue.catalogue("timm")) == sorted(timm.list_models())
    assert set(catalogue.catalogue("timm").values()) == {"classification"}


def test_names_resolve_with_their_source() -> None:
    names = [m.name for m in catalogue.resolve(["timm:resnet10*", "resnet18", "timm:resnet18"])]
    assert names == ["timm:resnet101", "timm:resnet101_clip", "timm:resnet101_clip_gap",
                     "timm:resnet101c", "timm:resnet101d", "timm:resnet101s", "timm:resnet10t",
                     "resnet18", "timm:resnet18"]  # torchvision's resnet18 and timm's  # fmt: skip
    (model,) = catalogue.resolve(["timm:convnext_tiny"])
    assert (model.source, model.architecture, model.task) == (
        "timm",
        "convnext_tiny",
        "classification",
    )
    with pytest.raises(
        catalogue.ZooError,
        match=r"unknown model 'timm:convnext_tyni'; did you mean timm:convnext_tiny",
    ):
        catalogue.resolve(["timm:convnext_tyni"])
    with pytest.raises(
        catalogue.ZooError,
        match=r"no model matches 'timm:zzz\*' \(see 'opscope list --source timm'\)",
    ):
        catalogue.resolve(["timm:zzz*"])


@pytest.mark.parametrize("name", FAMILIES)
def test_macs_are_flop_counter_modes_and_every_op_is_counted(name: str) -> None:
    model = zoo.ZooModel(f"timm:{name}", "classification")
    report, params, *_ = profile_model(model)
    net, example, _ = prepare(model, None, "meta")
    with torch.no_grad(), FlopCounterMode(display=False) as flops:  # alone, on the same model
        net(*example.args)
    assert report.total_macs * 2 == flops.get_total_flops()
    assert report.uncounted_ops == ()
    assert params == sum(p.numel() for p in net.parameters())
    assert {p.device.type for p in net.parameters()} == {"meta"}


def test_each_model_runs_at_its_pretrained_configurations_size() -> None:
    def first_input(name: str) -> tuple[int, ...]:
        return zoo.default_input(zoo.ZooModel(f"timm:{name}", "classification"))

    assert first_input("resnet50") == (1, 3, 224, 224)
    assert first_input("efficientnet_b3") == (
        1,
        3,
        288,
        288,
    )  # timm.create_model(...).pretrained_cfg
    assert first_input("vit_base_patch16_384") == (1, 3, 384, 384)
    model = zoo.ZooModel("timm:vit_base_patch16_384", "classification")
    assert profile_model(model).inputs == "1×3×384×384"


def test_an_input_of_another_size_builds_the_model_for_it() -> None:
    model = zoo.ZooModel("timm:vit_base_patch16_224", "classification")
    at_384 = profile_model(model, (1, 3, 384, 384))
    assert at_384.report.records[0].input_shape == (1, 3, 384, 384)
    assert (
        at_384.report.total_macs > 3 * profile_model(model).report.total_macs
    )  # 577 tokens, not 197


def test_meta_equals_cpu() -> None:
    model = zoo.ZooModel("timm:resnet18", "classification")
    on_meta, on_cpu = profile_model(model, None, "meta"), profile_model(model, None, "cpu")
    assert on_meta.report.records == on_cpu.report.records
    assert on_meta.params == on_cpu.params


def test_weights_are_never_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_weights(*args, **kwargs):
        raise AssertionError("timm was asked for pretrained weights")

    monkeypatch.setattr("timm.models._builder.load_pretrained", no_weights)
    for name in FAMILIES:
        assert isinstance(
            zoo.build(zoo.ZooModel(f"timm:{name}", "classification")), torch.nn.Module
        )


def test_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "timm:resnet18", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["model"], data["inputs"], data["uncounted_ops"]) == (
        "timm:resnet18",
        "1×3×224×224",
        [],
    )
    assert main(["compare", "timm:resnet1?", "resnet18", "--format", "json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)["models"]}
    assert {"timm:resnet18", "resnet18"} <= set(rows) and all(
        not row["error"] for row in rows.values()
    )
    assert rows["timm:resnet18"]["published"]["gflops"] is None  # torchvision's figures only
    assert main(["list", "--source", "timm", "convnext_t*"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"2 models from timm {timm.__version__}"
    assert [line.split() for line in lines[2:]] == [
        ["timm:convnext_tiny", "classification"], ["timm:convnext_tiny_hnf", "classification"]
    ]  # fmt: skip
