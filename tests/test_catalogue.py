"""The names opscope knows, read from torchvision's source without importing it."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torchvision

from opscope import catalogue


def test_the_catalogue_is_torchvisions_own_list() -> None:
    tasks = {
        "classification": torchvision.models,
        "detection": torchvision.models.detection,
        "segmentation": torchvision.models.segmentation,
        "video": torchvision.models.video,
        "optical_flow": torchvision.models.optical_flow,
        "quantization": torchvision.models.quantization,
    }
    expected: dict[str, str] = {}
    for task, module in tasks.items():
        for name in torchvision.models.list_models(module=module):
            expected.setdefault(name, task)
    assert catalogue.catalogue() == dict(sorted(expected.items()))


def test_list_finds_pieces_of_names_in_any_case_and_globs() -> None:
    assert {m.name for m in catalogue.list_models("resnet", task="classification")} >= {
        "resnet18", "resnet50", "wide_resnet50_2"
    }  # fmt: skip
    assert [m.name for m in catalogue.list_models("EfficientNet_B?")] == []  # globs keep case
    assert len(catalogue.list_models("efficientnet_b?")) == 8
    assert {m.task for m in catalogue.list_models("RCNN")} == {"detection"}


@pytest.mark.parametrize(
    ("name", "suggested"),
    [("RESNET50", ["resnet50"]), ("vit", ["vit_b_16", "vit_b_32", "vit_h_14", "vit_l_16", "vit_l_32"]),
     ("resnet19", ["resnet18", "resnet152", "resnet101"])],
)  # fmt: skip
def test_unknown_names_get_the_closest_ones(name: str, suggested: list[str]) -> None:
    assert catalogue.suggestions(name) == suggested
    with pytest.raises(catalogue.ZooError, match=f"did you mean {suggested[0]}"):
        catalogue.resolve([name])


def test_help_list_and_unknown_names_answer_without_loading_torch() -> None:
    script = (
        "import sys\n"
        "from opscope.cli import main\n"
        "assert main(['--help']) == 0\n"
        "assert main(['list', 'resnet']) == 0\n"
        "assert main(['profile', 'resnet19']) == 2\n"
        "assert main(['profile', 'resnet18', '--input', 'abc']) == 2\n"
        "assert main(['profile', 'timm:resnet19']) in (1, 2)\n"  # 1: without the timm extra
        "assert main(['compare', 'hf:bret']) in (1, 2)\n"
        "assert main(['list', '--source', 'timm', 'resnet5']) in (0, 1)\n"
        "assert main(['list', '--source', 'hf', 'bert']) in (0, 1)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert not {'timm', 'transformers'} & set(sys.modules), 'a library was imported'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "resnet50" in done.stdout and "did you mean resnet18" in done.stderr


def test_names_carry_their_source() -> None:
    assert [catalogue.split_source(n) for n in ("timm:vit_small_patch16_224", "hf:bert", "a.b:c")] == [
        ("timm", "vit_small_patch16_224"), ("hf", "bert"), ("custom", "a.b:c")
    ]  # fmt: skip
    model = catalogue.ZooModel("timm:resnet50", "classification")
    assert (model.source, model.architecture) == ("timm", "resnet50")
    assert catalogue.ZooModel("resnet50", "classification").source == "torchvision"
    assert not catalogue.is_factory_path("hf:bert") and catalogue.is_factory_path("hf.models:bert")
    with pytest.raises(ValueError, match="source must be one of torchvision, timm, hf"):
        catalogue.catalogue("keras")


@pytest.mark.parametrize(("source", "extra"), [("timm", "timm"), ("hf", "transformers")])
def test_a_missing_extra_is_one_line_naming_it(
    source: str, extra: str, monkeypatch, capsys
) -> None:
    from opscope.cli import main

    monkeypatch.setitem(sys.modules, extra, None)  # as if it were not installed
    catalogue.catalogue.cache_clear()
    try:
        for argv in (
            ["profile", f"{source}:resnet50"],
            ["compare", f"{source}:*"],
            ["list", "--source", source],
        ):
            assert main(argv) == 1
            err = capsys.readouterr().err
            expected = f"{source}: models need {extra}: pip install 'opscope[{source}]'"
            assert err == f"opscope: error: {expected}\n"
    finally:
        catalogue.catalogue.cache_clear()
