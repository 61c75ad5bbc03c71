"""The model zoo: names, globs, factories, published metrics, and cheap builds on meta."""

from __future__ import annotations

import pytest
import torch
import torchvision

from opscope import catalogue
from opscope import zoo
from opscope.compare import profile_model

# A dozen models across families, including the RegNets (which cannot be built under
# torch.device("meta") and take the parameters-on-meta fallback) and transformers (layer norm).
DOZEN = [
    "resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "regnet_y_400mf",
    "regnet_x_400mf", "squeezenet1_1", "shufflenet_v2_x0_5", "mnasnet0_5", "densenet121",
    "convnext_tiny", "swin_t", "vit_b_16",
]  # fmt: skip


@pytest.mark.parametrize("name", DOZEN)
def test_meta_build_and_run_equal_a_cpu_run(name: str) -> None:
    model = zoo.ZooModel(name, "classification")
    on_meta, meta_params, *_ = profile_model(model, (1, 3, 224, 224), "meta")
    on_cpu, cpu_params, *_ = profile_model(model, (1, 3, 224, 224), "cpu")
    assert on_meta.records == on_cpu.records
    assert meta_params == cpu_params
    assert len(on_cpu.records) > 0


def test_regnet_needs_and_gets_the_fallback() -> None:
    with pytest.raises(NotImplementedError), torch.device("meta"):
        torchvision.models.regnet_y_400mf(weights=None)
    built = zoo.build(zoo.ZooModel("regnet_y_400mf", "classification"), "meta")
    assert {p.device.type for p in built.parameters()} == {"meta"}
    assert {b.device.type for b in built.buffers()} == {"meta"}
    assert not built.training


def test_list_models_by_glob_and_task() -> None:
    assert [m.name for m in catalogue.list_models("efficientnet_b?")] == [f"efficientnet_b{i}" for i in range(8)]
    classification = catalogue.list_models(task="classification")
    assert len(classification) == len(torchvision.models.list_models(module=torchvision.models))
    assert {m.task for m in catalogue.list_models("*rcnn*")} == {"detection"}
    assert catalogue.list_models("r3d_18")[0].task == "video"


def test_resolve_keeps_order_and_drops_repeats() -> None:
    names = [m.name for m in catalogue.resolve(["vgg11", "resnet1?", "resnet18"])]
    assert names == ["vgg11", "resnet18"]


def test_unknown_names_suggest_close_ones() -> None:
    with pytest.raises(catalogue.ZooError, match=r"unknown model 'resnet19'; did you mean resnet18"):
        catalogue.resolve(["resnet19"])
    with pytest.raises(catalogue.ZooError, match="no model matches 'nothing\\*'"):
        catalogue.resolve(["nothing*"])


def test_factories_by_path(tmp_path, monkeypatch) -> None:
    (tmp_path / "my_models.py").write_text(
        "import torch\n"
        "def tiny():\n    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))\n"
        "def not_a_model():\n    return 42\n"
        "CONSTANT = 1\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    (model,) = catalogue.resolve(["my_models:tiny"])
    assert model.task == "custom"
    report, params, *_ = profile_model(model, (1, 3, 8, 8))
    assert report.total_ops == 4 * 6 * 6 * (2 * 3 * 9)
    assert params == 4 * 3 * 9 + 4
    for name, message in [
        ("my_models:not_a_model", "returned int, not a torch.nn.Module"),
        ("my_models:missing", "has no attribute 'missing'"),
        ("my_models:CONSTANT", "is not callable"),
        ("no_such_package.models:tiny", "cannot import 'no_such_package.models'"),
    ]:
        with pytest.raises(catalogue.ZooError, match=message):
            zoo.build(zoo.ZooModel(name, "custom"))


def test_published_metrics_come_from_torchvision_weights() -> None:
    weights = torchvision.models.ResNet50_Weights.DEFAULT
    published = zoo.published_metrics(zoo.ZooModel("resnet50", "classification"))
    assert published.acc1 == weights.meta["_metrics"]["ImageNet-1K"]["acc@1"]
    assert published.gflops == weights.meta["_ops"]
    assert (published.size, published.metric, published.dataset) == (224, "acc@1", "ImageNet-1K")
    assert zoo.published_metrics(zoo.ZooModel("x:y", "custom")).acc1 is None
    # Every task names its figure and, where torchvision says it, the size it was measured at.
    named = {
        name: (p.metric, p.size)
        for name in ("deeplabv3_resnet50", "fasterrcnn_resnet50_fpn", "r3d_18", "raft_small")
        for p in [zoo.published_metrics(zoo.ZooModel(name, catalogue.catalogue()[name]))]
    }
    assert named == {"deeplabv3_resnet50": ("mIoU", 520), "fasterrcnn_resnet50_fpn": ("box mAP", None),
                     "r3d_18": ("acc@1", 112), "raft_small": ("EPE", None)}  # fmt: skip


def test_example_inputs_per_task() -> None:
    (images,) = zoo.example_input(zoo.ZooModel("fcos_resnet50_fpn", "detection"), (2, 3, 64, 64), "meta").args
    assert [tuple(image.shape) for image in images] == [(3, 64, 64)] * 2
    frames = zoo.example_input(zoo.ZooModel("raft_small", "optical_flow"), (1, 3, 64, 64), "meta").args
    assert len(frames) == 2


@pytest.mark.parametrize("task", ["detection", "segmentation", "video", "optical_flow"])
def test_no_model_ever_downloads_weights(task: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Detection and segmentation builders fetch ImageNet backbones unless told not to.
    def no_download(*args, **kwargs):
        raise AssertionError(f"download attempted: {args}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    models = catalogue.list_models(task=task)
    assert models
    for model in models:
        assert isinstance(zoo.build(model, "meta"), torch.nn.Module)


def test_video_models_default_to_their_crop_size() -> None:
    assert zoo.default_input(zoo.ZooModel("r3d_18", "video")) == (1, 3, 16, 112, 112)
    assert zoo.default_input(zoo.ZooModel("mvit_v2_s", "video")) == (1, 3, 16, 224, 224)
