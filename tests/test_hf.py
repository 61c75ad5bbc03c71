"""Hugging Face transformers' model types by name (``hf:bert``), built offline from the
library's default configuration: names, inputs, exact counts (the ``hf`` extra)."""

from __future__ import annotations

import json
import os

import pytest

transformers = pytest.importorskip("transformers")

import torch
from torch.utils.flop_counter import FlopCounterMode

from opscope import catalogue, libraries, zoo
from opscope.cli import main
from opscope.compare import prepare, profile_model
from opscope.inputs import InputSpec


def hf(model_type: str) -> zoo.ZooModel:
    (model,) = catalogue.resolve([f"hf:{model_type}"])
    return model


def test_the_model_types_are_automodels_own() -> None:
    from transformers.models.auto import configuration_auto, modeling_auto

    names = catalogue.catalogue("hf")
    assert list(names) == sorted(modeling_auto.MODEL_MAPPING_NAMES)
    assert set(names) <= set(
        configuration_auto.CONFIG_MAPPING_NAMES
    )  # AutoConfig.for_model knows each
    tasks = {name: names[name] for name in ("bert", "gpt2", "t5", "vit", "whisper", "clip")}
    assert tasks == {"bert": "text", "gpt2": "text", "t5": "seq2seq", "vit": "vision",
                     "whisper": "audio", "clip": "multimodal"}  # fmt: skip


def test_unknown_types_get_the_closest_ones() -> None:
    with pytest.raises(catalogue.ZooError, match=r"unknown model 'hf:bret'; did you mean hf:bert"):
        catalogue.resolve(["hf:bret"])
    assert {"hf:gpt2", "hf:gpt_neo", "hf:gptj"} <= {m.name for m in catalogue.resolve(["hf:gpt*"])}


@pytest.mark.parametrize(
    ("model_type", "inputs"),
    [("bert", "input_ids=1×128:int64"), ("gpt2", "input_ids=1×128:int64"),
     ("t5", "input_ids=1×128:int64, decoder_input_ids=1×128:int64"),
     ("vit", "pixel_values=1×3×224×224"), ("clip", "input_ids=1×77:int64, pixel_values=1×3×224×224")],
)  # fmt: skip
def test_default_inputs_follow_what_the_forward_takes(model_type: str, inputs: str) -> None:
    run = profile_model(hf(model_type))
    assert run.inputs == inputs
    assert run.report.uncounted_ops == ()


@pytest.mark.parametrize("model_type", ["bert", "gpt2"])
def test_macs_are_flop_counter_modes(model_type: str) -> None:
    model = hf(model_type)
    report = profile_model(model).report
    net, example, _ = prepare(model, None, "meta")
    with torch.no_grad(), FlopCounterMode(display=False) as flops:  # alone, on the same model
        net(*example.args, **example.kwargs)
    assert report.total_macs * 2 == flops.get_total_flops()
    assert {p.device.type for p in net.parameters()} == {"meta"}


def test_one_bert_layer_in_closed_form() -> None:
    """One layer of BERT-base (``BertConfig()``: hidden E = 768, H = 12 heads of d = 64,
    intermediate F = 3072, exact GELU) on L = 128 tokens, in opscope's convention:

    ====================================  =========================================
    q, k, v and output projections        4 * L*E*2E = 8 L E^2   (Linear with bias)
    feed-forward, E -> F -> E             2 * L*F*2E = 4 L E F
    scaled dot-product attention          q scaling L E, scores H L^2 (2d - 1),
                                          softmax H L (3L - 1), weighted sums
                                          L E (2L - 1): with H d = E, 4 L^2 E + 2 H L^2 - H L
    two residual additions                2 L E
    two LayerNorms                        2 * (7 L E + 2 L)
    GELU (0.5 x (1 + erf(x / sqrt 2)))    5 L F
    ====================================  =========================================

    total = 8 L E^2 + 4 L E F + 4 L^2 E + 2 H L^2 - H L + 16 L E + 4 L + 5 L F
    """
    config = transformers.BertConfig()
    L, E, H, F = 128, config.hidden_size, config.num_attention_heads, config.intermediate_size
    assert (E, H, F, config.hidden_act) == (768, 12, 3072, "gelu")
    closed_form = (
        8 * L * E**2
        + 4 * L * E * F
        + 4 * L**2 * E
        + 2 * H * L**2
        - H * L
        + 16 * L * E
        + 4 * L
        + 5 * L * F
    )
    records = profile_model(hf("bert")).report.records
    layer = [
        r for r in records if r.name == "encoder.layer.0" or r.name.startswith("encoder.layer.0.")
    ]
    assert sum(r.ops for r in layer) == closed_form == 1_866_202_112
    assert sum(r.ops for r in records if r.name.startswith("encoder.layer.")) == 12 * closed_form


def test_a_vision_model_is_built_for_the_image_given() -> None:
    run = profile_model(hf("vit"), [InputSpec((1, 3, 384, 384), name="pixel_values")])
    assert run.inputs == "pixel_values=1×3×384×384"
    assert run.report.records[0].input_shape == (1, 3, 384, 384)


def test_an_attention_mask_needs_values_it_gets_on_a_real_device(
    capsys: pytest.CaptureFixture[str],
) -> None:
    ids, mask = "input_ids=1x16:int64", "attention_mask=1x16:int64"
    assert main(["profile", "hf:bert", "--input", ids, "--input", mask]) == 1
    assert (
        "reads tensor values (Tensor.item()), which the meta device has not: try --device cpu"
        in capsys.readouterr().err
    )
    assert (
        main(
            [
                "profile",
                "hf:bert",
                "--input",
                ids,
                "--input",
                mask,
                "--device",
                "cpu",
                "--format",
                "json",
            ]
        )
        == 0
    )
    with_mask = json.loads(capsys.readouterr().out)
    assert main(["profile", "hf:bert", "--input", ids, "--format", "json"]) == 0
    without = json.loads(capsys.readouterr().out)
    # A mask of ones (nothing masked) means what a missing one means: the same work, and the
    # check that found it so (mask.all(): 15 logical ands of the 16 values).
    assert with_mask["inputs"] == "input_ids=1×16:int64, attention_mask=1×16:int64"
    assert with_mask["total_ops"] == without["total_ops"] + 15


def test_a_model_without_default_inputs_says_which_to_give(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["profile", "hf:decision_transformer"]) == 2
    err = capsys.readouterr().err
    assert "hf:decision_transformer has no default input (its forward takes states, actions" in err
    assert "give them with --input NAME=SIZES[:DTYPE]" in err


def test_offline_is_switched_on_while_building_and_back_afterwards(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with libraries.offline():
        assert os.environ["HF_HUB_OFFLINE"] == "1" and huggingface_hub.constants.HF_HUB_OFFLINE
    assert "HF_HUB_OFFLINE" not in os.environ and not huggingface_hub.constants.HF_HUB_OFFLINE


def test_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--source", "hf", "gpt2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"1 model from transformers {transformers.__version__}"
    assert lines[2].split() == ["hf:gpt2", "text"]
    assert main(["compare", "hf:bert", "hf:gpt2", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)["models"]
    assert {row["name"]: row["inputs"] for row in rows} == {
        "hf:bert": "input_ids=1×128:int64", "hf:gpt2": "input_ids=1×128:int64"
    }  # fmt: skip


def test_a_second_input_seen_first_is_not_called_a_resize(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """CLIP's first layer sees its second input, the image, at the size given."""
    assert main(["profile", "hf:clip", "--format", "markdown"]) == 0
    heading = capsys.readouterr().out.splitlines()[0]
    assert heading == "hf:clip at input_ids=1×77:int64, pixel_values=1×3×224×224 on meta"
