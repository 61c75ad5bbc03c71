"""Every torchvision classification model, at the size its figures were published at: the
MACs reproduce torchvision's published "GFLOPS", and equal FlopCounterMode's FLOPs / 2."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from opscope import catalogue
from opscope import zoo
from opscope.compare import profile_model
from opscope.meta import MetaShortcuts

MODELS = catalogue.list_models(task="classification")


def measured(model: zoo.ZooModel) -> tuple[str, int, int, int, tuple, int, int]:
    report, params, *_ = profile_model(model, zoo.published_input(model), "meta", coverage=True)
    coverage = report.coverage
    return (model.name, report.total_macs, coverage.total_flops, coverage.counted_flops,
            report.uncounted_ops, report.total_params, params)  # fmt: skip


@pytest.fixture(scope="module")
def sweep() -> dict[str, tuple]:
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(2, mp_context=context) as pool:
        return {row[0]: row[1:] for row in pool.map(measured, MODELS)}


def _printed_digits(value: float) -> int:
    text = repr(value)
    return len(text.split(".")[1]) if "." in text else 0


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.name)
def test_macs_reproduce_the_published_gflops(sweep: dict[str, tuple], model: zoo.ZooModel) -> None:
    macs, flops, counted, uncounted, total_params, params = sweep[model.name]
    assert 2 * macs == flops  # FlopCounterMode's total, exactly
    assert counted == flops  # every one of its FLOPs was in work opscope counted
    assert uncounted == ()  # and no operator was left without a formula
    assert total_params == params  # the model's parameters, each once
    published = zoo.published_metrics(model).gflops
    assert round(macs / 1e9, _printed_digits(published)) == published


@pytest.mark.parametrize("name", ["swin_t", "maxvit_t", "vit_b_16"])
def test_the_probe_agrees_with_flop_counter_mode_alone(sweep: dict[str, tuple], name: str) -> None:
    model = zoo.ZooModel(name, "classification")
    net = zoo.build(model, "meta", zoo.published_input(model))
    (x,) = zoo.example_input(model, zoo.published_input(model), "meta").args
    with torch.inference_mode(), MetaShortcuts(), FlopCounterMode(display=False) as counter:
        net(x)
    assert counter.get_total_flops() == sweep[name][1] == 2 * sweep[name][0]


def test_swin_and_maxvit_count_at_least_the_flop_counter_equivalent(sweep) -> None:
    for name in ("swin_t", "maxvit_t"):
        model = zoo.ZooModel(name, "classification")
        report, params, *_ = profile_model(model, zoo.published_input(model), "meta")
        assert report.total_ops >= sweep[name][1]  # everything, beyond the products
        assert report.total_params == params  # swin_t: 28.3 M, its Linear layers included
