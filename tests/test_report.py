"""The report: totals, sorting and the JSON-ready export."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from opscope import Profiler, Report


def profiled() -> Profiler:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),  # 4*16*(2*3*9) = 3456
        nn.Conv2d(4, 16, 1, bias=False),  # 16*16*(2*4-1) = 1792
        nn.Conv2d(16, 16, 3, padding=1, groups=16),  # 16*16*(2*9) = 4608
    )
    with Profiler(model) as p:
        model(torch.randn(1, 3, 4, 4))
    return p


def test_totals() -> None:
    report = profiled().report
    assert [r.ops for r in report.records] == [3456, 1792, 4608]
    assert report.total_ops == 3456 + 1792 + 4608
    assert report.total_params == (3 * 4 * 9 + 4) + 4 * 16 + (16 * 9 + 16)


def test_sort_by_ops_is_descending_and_order_is_execution_order() -> None:
    report = profiled().report
    assert [r.name for r in report.sorted("ops")] == ["2", "0", "1"]
    assert [r.name for r in report.sorted("order")] == ["0", "1", "2"]
    with pytest.raises(ValueError, match="sort must be one of"):
        report.sorted("flops")  # type: ignore[arg-type]


def test_to_dict_is_json_ready_and_exact() -> None:
    p = profiled()
    data = json.loads(json.dumps(p.to_dict()))
    assert data["total_ops"] == p.total_ops == 9856
    assert data["total_params"] == p.report.total_params
    first = data["layers"][0]
    assert first == {
        "name": "0",
        "type": "Conv2d",
        "family": "Conv2d",
        "call_index": 1,
        "training": True,
        "input_shape": [1, 3, 4, 4],
        "output_shape": [1, 4, 4, 4],
        "input_shapes": [[1, 3, 4, 4]],
        "output_shapes": [[1, 4, 4, 4]],
        "config_type": "opscope.formulas.conv.ConvConfig",
        "kernel_size": [3, 3],
        "stride": [1, 1],
        "padding": [1, 1],
        "dilation": [1, 1],
        "groups": 1,
        "bias": True,
        "padding_mode": "zeros",
        "params": 112,
        "ops": 3456,
        "macs": 3 * 9 * 4 * 16,  # (Cin * k * k) multiply-accumulates per output element
        "calls": 1,
        "input_bytes": 1 * 3 * 4 * 4 * 4,  # float32
        "output_bytes": 1 * 4 * 4 * 4 * 4,
        "param_bytes": 112 * 4,
        "time_ns": None,
        "time_spread_ns": None,
        "uncounted": None,
        "phase": "forward",
    }
    assert [layer["ops"] for layer in data["layers"]] == [3456, 1792, 4608]


def test_padding_strings_are_kept_as_given() -> None:
    conv = nn.Conv2d(1, 1, 3, padding="same")
    with Profiler(conv) as p:
        conv(torch.randn(1, 1, 5, 5))
    assert p.records[0].padding == "same"
    assert p.to_dict()["layers"][0]["padding"] == "same"


def test_unknown_record_attribute_is_an_attribute_error() -> None:
    record = profiled().records[0]
    with pytest.raises(AttributeError, match="no attribute 'flops'"):
        record.flops  # noqa: B018


def test_json_round_trip_gives_equal_records() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding="same"), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
        nn.Linear(4 * 16, 5), nn.Softmax(dim=-1),
    )  # fmt: skip
    lstm = nn.LSTM(5, 3, num_layers=2, bidirectional=True)
    with Profiler(model, coverage=True) as p, Profiler(lstm) as q:
        model(torch.randn(2, 3, 4, 4))
        model(torch.randn(1, 3, 4, 4))
        lstm(torch.randn(7, 2, 5))
    for report in (p.report, q.report):
        text = report.to_json()
        back = Report.from_json(text)
        assert back == report
        assert back.records == report.records and back.total_ops == report.total_ops
        assert Report.from_json(back.to_json()).to_json() == text
    assert Report.from_json(p.report.to_json()).records[0].padding == "same"  # still a string


def test_reading_an_unknown_config_type_is_an_error() -> None:
    data = profiled().to_dict()
    data["layers"][0]["config_type"] = "evil.module.Config"
    with pytest.raises(ValueError, match="unknown config type 'evil.module.Config'"):
        Report.from_dict(data)
