"""What a model is called with: --input specifications, and a factory's own example."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from opscope.cli import main
from opscope.inputs import InputSpec, describe_inputs, parse_input

FACTORIES = '''
import torch
from torch import nn

def mlp():
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

class Tokens(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(1000, 16)
        self.head = nn.Linear(16, 2)
    def forward(self, ids, mask=None):
        h = self.embed(ids)
        if mask is not None:
            h = h * mask.unsqueeze(-1)
        return self.head(h)

def tokens():
    return Tokens()

def with_example():
    return tokens(), {"ids": torch.zeros(2, 7, dtype=torch.long)}

def broken():
    raise ValueError("no such checkpoint")
'''


@pytest.fixture
def factories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "factories.py").write_text(FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


@pytest.mark.parametrize(
    ("text", "spec"),
    [("1x3x224x224", InputSpec((1, 3, 224, 224))), ("4x64", InputSpec((4, 64))),
     ("1×128:int64", InputSpec((1, 128), "int64")), ("mask=1x128:bool", InputSpec((1, 128), "bool", "mask")),
     ("7", InputSpec((7,))), ("2x2:half", InputSpec((2, 2), "float16"))],
)  # fmt: skip
def test_specifications(text: str, spec: InputSpec) -> None:
    assert parse_input(text) == spec
    assert parse_input(str(spec)) == spec  # written back as it is read


@pytest.mark.parametrize("text", ["", "x", "0x3", "1x3:complex", "a b=1x2", "=1x2", "1x-2"])
def test_malformed_specifications(text: str) -> None:
    with pytest.raises(ValueError, match=r"\[NAME=\]SIZES\[:DTYPE\]"):
        parse_input(text)


def profiled(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(["profile", *argv, "--format", "json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def test_an_mlp_tokens_and_keywords(factories: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mlp = profiled(capsys, "factories:mlp", "--input", "4x64")
    assert mlp["inputs"] == "4×64"
    assert mlp["total_ops"] == 4 * 32 * 2 * 64 + 4 * 32 + 4 * 10 * 2 * 32
    ids = profiled(capsys, "factories:tokens", "--input", "2x7:int64")
    assert ids["layers"][-1]["input_shape"] == [2, 7, 16]  # the head, after the lookup
    both = profiled(capsys, "factories:tokens", "--input", "2x7:int64", "--input", "mask=2x7")
    assert both["inputs"] == "2×7:int64, mask=2×7"
    assert both["total_ops"] - ids["total_ops"] == 2 * 7 * 16  # the mask's multiplications


def test_a_factory_may_give_its_own_example(factories: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = profiled(capsys, "factories:with_example")
    assert data["inputs"] == "ids=2×7:int64"
    assert data["layers"][-1]["input_shape"] == [2, 7, 16]
    # --input still wins over the factory's example
    assert profiled(capsys, "factories:with_example", "--input", "ids=3x5:int64")["inputs"] == "ids=3×5:int64"


def test_a_factory_that_raises_says_it_could_not_build(factories: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "factories:broken"]) == 1
    assert capsys.readouterr().err == (
        "opscope: error: cannot build factories:broken: ValueError: no such checkpoint\n"
    )


def test_inputs_are_described_as_they_are_written() -> None:
    specs = [parse_input("1x128:int64"), parse_input("attention_mask=1x128:int64")]
    assert describe_inputs(specs) == "1×128:int64, attention_mask=1×128:int64"
