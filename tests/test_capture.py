"""Capture never breaks the user's forward pass and never loses a report: nested tensors,
vmap, keyword calls, subclasses with children, idle modules, checkpointing."""

from __future__ import annotations

import dataclasses
import gc
import warnings
import weakref
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
import torch.nn.utils.prune
import torch.utils.checkpoint
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from opscope import Profiler, capture
from opscope.records import OUTSIDE_NAME
from opscope.report import Report
from opscope.formulas.registry import OpCall, op_formula_for
from opscope.tables import notes

aten = torch.ops.aten


def encoder() -> nn.Module:
    layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, batch_first=True)
    return nn.TransformerEncoder(layer, 2, enable_nested_tensor=True).eval()


def padded_batch(short: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A (2, 5, 16) batch and its padding mask: sequence ``short`` has length 3, the other 5."""
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[short, 3:] = True
    return torch.randn(2, 5, 16), mask


@pytest.mark.parametrize("coverage", [True, False])
@pytest.mark.parametrize("functional", [True, False])
def test_a_padding_mask_never_breaks_the_forward(coverage: bool, functional: bool) -> None:
    torch.manual_seed(0)
    model = encoder()
    x, mask = padded_batch(0)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's note on nested tensors being a prototype
        bare = model(x, src_key_padding_mask=mask)
        with Profiler(model, coverage=coverage, functional=functional) as p:
            profiled = model(x, src_key_padding_mask=mask)
        torch.testing.assert_close(profiled, bare)  # the same forward, the same result
        # Every result reads, whatever could or could not be counted.
        assert p.total_ops >= 0 and p.to_dict()["total_ops"] == p.total_ops
        assert isinstance(notes(p.report), list) and p.to_json()


def test_nested_tensors_are_counted_or_listed_never_a_crash() -> None:
    """A padded batch runs the encoder on nested tensors, every operator of it counted; an
    operator whose formula reads a dimension a nested tensor lacks (softmax) is listed as
    uncounted, with a warning, and the rest of the report stands."""
    torch.manual_seed(0)
    model = encoder()
    x, mask = padded_batch(1)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Profiler(model) as padded:
            model(x, src_key_padding_mask=mask)
        nested = torch.nested.nested_tensor([torch.randn(5, 16), torch.randn(3, 16)])
        with Profiler(model) as mixed:
            model.layers[0](nested).softmax(-1).relu()
    assert padded.report.uncounted_ops == () and padded.total_ops > 0
    with pytest.warns(UserWarning, match="cannot count operator _softmax.*no single shape"):
        assert mixed.report.uncounted_ops == (("_softmax", 1),)
    (layer,) = [r.ops for r in padded.report.records if r.name == "layers.0"]  # lengths 5, 3
    assert mixed.total_ops == layer + 16 * (5 + 3)  # the same layer, then the relu


def test_vmap_counts_the_batched_work() -> None:
    linear, conv = nn.Linear(5, 7), nn.Conv2d(3, 4, 3)
    with Profiler(linear) as p:
        torch.vmap(linear)(torch.randn(4, 5))
    assert p.total_ops == 4 * 7 * (2 * 5)
    with Profiler(conv) as p:
        torch.vmap(conv)(torch.randn(6, 1, 3, 8, 8))
    with Profiler(conv) as unbatched:
        conv(torch.randn(1, 3, 8, 8))
    assert p.total_ops == 6 * unbatched.total_ops
    with Profiler(linear) as p:  # nested vmaps multiply
        torch.vmap(torch.vmap(linear))(torch.randn(3, 4, 5))
    assert p.total_ops == 12 * 7 * (2 * 5)


def test_vmap_batch_is_read_from_every_input_through_grad_transforms() -> None:
    """A vmapped call stands for one call per sample whichever of its inputs is batched,
    and under grad transforms (the per-sample-gradient recipe), whose wrappers lie between
    the batched tensor and the module."""
    linear = nn.Linear(8, 4)
    single = 4 * (2 * 8)  # one row: 4 outputs of 8 products and 8 additions (bias included)
    params = {name: value.detach() for name, value in linear.named_parameters()}

    def loss(parameters: dict, x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(linear, parameters, (x,)).sum()

    for transform in (torch.func.grad, torch.func.jacrev):
        with Profiler(linear) as p:
            torch.vmap(transform(loss), in_dims=(None, 0))(params, torch.randn(5, 8))
        forward = [r.ops for r in p.records if r.phase == "forward" and r.name == ""]
        assert forward == [5 * single]  # the Linear's (the sum is outside the model)
    bilinear, a = nn.Bilinear(3, 4, 2), torch.randn(3)
    with Profiler(bilinear) as unbatched:
        bilinear(a, torch.randn(4))
    with pytest.warns(UserWarning, match="batching rule"), Profiler(bilinear) as p:
        torch.vmap(lambda b: bilinear(a, b))(torch.randn(5, 4))  # the second input batched
    assert p.total_ops == 5 * unbatched.total_ops > 0
    with pytest.warns(UserWarning, match="batching rule"), Profiler(bilinear) as p:
        torch.vmap(bilinear)(torch.randn(5, 3), torch.randn(5, 4))  # both, at one level: 5
    assert p.total_ops == 5 * unbatched.total_ops
    # an ensemble: the batch is in the parameters, stacked and swapped in by functional_call
    members = [nn.Linear(8, 4) for _ in range(5)]
    stacked, buffers = torch.func.stack_module_state(members)
    with Profiler(linear) as p:
        torch.vmap(lambda w, b, x: torch.func.functional_call(linear, (w, b), (x,)), in_dims=(0, 0, None))(
            stacked, buffers, torch.randn(3, 8)
        )
    assert p.total_ops == 5 * 3 * single


@dataclasses.dataclass
class _Node:
    x: torch.Tensor
    parent: _Node | None = None
    cache: torch.Tensor = dataclasses.field(init=False)


def test_dataclass_inputs_that_refer_to_each_other_or_are_unfinished_are_read() -> None:
    # A module's inputs are walked for their autograd nodes when gradients are recorded: a
    # dataclass pointing back at another (a tree) and one with a field not set yet must not
    # break the user's forward (a RecursionError, an AttributeError).
    class Reads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(4, 4)

        def forward(self, node: _Node) -> torch.Tensor:
            return self.linear(node.x)

    model = nn.Sequential()
    model.add_module("reads", Reads())
    root = _Node(torch.randn(2, 4, requires_grad=True))
    child = _Node(torch.randn(2, 4), parent=root)
    root.parent = child  # a cycle
    with Profiler(model) as p:
        model(child).sum().backward()
    assert [r.name for r in p.records if r.phase == "forward"][:1] == ["reads.linear"]


def test_keyword_calls_are_bound_to_the_signature() -> None:
    attention = nn.MultiheadAttention(8, 2, batch_first=True)
    q, k = torch.randn(1, 3, 8), torch.randn(1, 4, 8)
    with Profiler(attention) as positional:
        attention(q, k, k)
    with Profiler(attention) as keywords:
        attention(key=k, value=k, query=q)
    assert keywords.total_ops == positional.total_ops
    assert keywords.records[0].input_shapes[:3] == ((1, 3, 8), (1, 4, 8), (1, 4, 8))
    other = nn.MultiheadAttention(8, 2, kdim=6, vdim=5, batch_first=True)
    k6, v5 = torch.randn(1, 4, 6), torch.randn(1, 4, 5)
    with Profiler(other) as p:
        other(value=v5, query=q, key=k6)
    with Profiler(other) as reference:
        other(q, k6, v5)
    assert p.total_ops == reference.total_ops > 0


class ConvBN(nn.Conv2d):
    """A Conv2d subclass whose forward also runs a child of its own."""

    def __init__(self) -> None:
        super().__init__(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(super().forward(x))


def test_children_a_formula_does_not_account_for_are_counted_on_their_own() -> None:
    model = ConvBN().eval()
    with Profiler(model) as p:
        model(torch.randn(1, 3, 8, 8))
    conv = nn.Conv2d(3, 8, 3)
    with Profiler(conv) as plain_conv:
        conv(torch.randn(1, 3, 8, 8))
    with Profiler(model.bn) as plain_bn:
        model.bn(torch.randn(1, 8, 6, 6))
    assert [r.name for r in p.records] == ["bn", ""]
    assert p.total_ops == plain_conv.total_ops + plain_bn.total_ops
    # MultiheadAttention's formula holds its out_proj: never counted twice.
    attention = nn.MultiheadAttention(8, 2, batch_first=True)
    x = torch.randn(1, 3, 8)
    with Profiler(attention) as p:
        attention(x, x, x)
    assert [r.name for r in p.records] == [""]


def test_modules_that_never_ran_are_listed_with_who_used_their_weights() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used = nn.Linear(4, 4)  # through its weight only
            self.dead = nn.Linear(4, 4)  # never

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.linear(x, self.used.weight, self.used.bias)

    model = nn.Sequential(Block())
    with Profiler(model) as p:
        model(torch.randn(2, 4))
    assert p.report.idle_modules == (("0.used", "Linear", "0"), ("0.dead", "Linear", ""))
    text = " ".join(notes(p.report))
    assert "their parameters used elsewhere (counted there): 1 module, in 0" in text
    assert "Never called, nor their parameters used: 0.dead (Linear)" in text
    assert p.to_dict()["idle_modules"][1] == {"name": "0.dead", "type": "Linear", "used_by": ""}
    # without the operators' mode nothing says whether their weights were used
    with Profiler(model, functional=False) as blind:
        model(torch.randn(2, 4))
    assert blind.report.idle_modules == (("0.used", "Linear", None), ("0.dead", "Linear", None))
    text = " ".join(notes(blind.report))
    assert "nor their parameters used" not in text
    assert "Never called, their parameters' use not followed (functional=False): 0.used (Linear), 0.dead (Linear)" in text
    assert Report.from_dict(blind.to_dict()).idle_modules == blind.report.idle_modules


def test_a_module_whose_tied_weight_ran_elsewhere_is_not_called_unused() -> None:
    # a language model's head shares its embedding's weight: whichever of the two ran used it
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.out, self.dead = nn.Embedding(10, 4), nn.Linear(4, 10, bias=False), nn.Linear(4, 4)
            self.out.weight = self.emb.weight

        def forward(self, x: torch.Tensor, ids: bool) -> torch.Tensor:
            return self.emb(x) if ids else self.out(x)

    model = Tied()
    with Profiler(model) as head:
        model(torch.randn(2, 4), False)
    with Profiler(model) as embedding:
        model(torch.zeros(2, dtype=torch.long), True)
    assert head.report.idle_modules == (("emb", "Embedding", "out"), ("dead", "Linear", ""))
    assert embedding.report.idle_modules == (("out", "Linear", "emb"), ("dead", "Linear", ""))
    text = " ".join(notes(head.report))
    assert "their parameters used elsewhere (counted there): 1 module, in out" in text
    assert "Never called, nor their parameters used: dead (Linear)" in text
    # one weight held by three: whichever ran used it for the other two
    shared = nn.Linear(4, 4)
    three = nn.ModuleDict({name: nn.Linear(4, 4) for name in "abc"})
    for linear in three.values():
        linear.weight = shared.weight
    with Profiler(three) as p:
        three["b"](torch.randn(2, 4))
    assert p.report.idle_modules == (("a", "Linear", "b"), ("c", "Linear", "b"))

    # a child's parameters are not its parent's own: a child that never ran is unused even
    # though its parent, a counted module of another kind, holds them too
    class ConvWithIdleNorm(nn.Conv2d):
        def __init__(self) -> None:
            super().__init__(3, 8, 3)
            self.bn = nn.BatchNorm2d(8)  # folded into the convolution: never run

    model = nn.Sequential(ConvWithIdleNorm())
    with Profiler(model) as p:
        model(torch.randn(1, 3, 8, 8))
    assert p.report.idle_modules == (("0.bn", "BatchNorm2d", ""),)


@pytest.mark.parametrize("reentrant", [True, False])
def test_checkpointing_reports_the_recomputation_as_such(reentrant: bool) -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    x = torch.randn(3, 8, requires_grad=True)
    with Profiler(model) as plain:
        model(x).sum().backward()
    with Profiler(model) as checkpointed:
        out = torch.utils.checkpoint.checkpoint(model, x, use_reentrant=reentrant)
        out.sum().backward()
    phases, reference = checkpointed.report.by_phase(), plain.report.by_phase()
    # The forward counts once; the forward run again in the backward pass is its own phase.
    assert phases["forward"] == reference["forward"]
    recomputed = [r.name for r in checkpointed.records if r.phase == "recompute"]
    if reentrant:  # the whole checkpointed function runs again
        assert phases["recompute"][0] == reference["forward"][0] - _loss_ops(reference)
        assert recomputed == ["0", "1", "2"]
    else:  # torch stops once the tensors the backward needs are back
        assert recomputed == ["0", "1"]


def _loss_ops(phases: dict[str, tuple[int, int]]) -> int:
    """The forward's ``.sum()`` of a 3×2 output: 5 additions, outside the model."""
    return 3 * 2 - 1


def test_an_operator_call_is_described_once_per_distinct_metadata(monkeypatch) -> None:
    # The dispatch mode finds a call's number by a cheap fingerprint of its metadata: the
    # OpCall a formula reads is built once per distinct call in the process (a model profiled
    # again describes nothing again), yet calls that differ in a scalar argument stay apart.
    monkeypatch.setattr(capture, "_descriptions", {})
    described = []
    real_of = OpCall.of

    def counting_of(cls: type[OpCall], *arguments: object) -> OpCall:
        described.append(1)
        return real_of(*arguments)

    monkeypatch.setattr(OpCall, "of", classmethod(counting_of))

    class Work(nn.Module):
        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            for _ in range(20):
                x * y
            return torch.cat([x.pow(2), x.pow(3), x.pow(3)])

    net = nn.Sequential(Work())
    x, y = torch.randn(2, 5), torch.randn(1, 5)
    with Profiler(net) as p:
        net[0](x, y)
    # mul, pow(2), pow(3) and cat
    assert len(described) == 4
    expected = {
        "mul": (20, 20 * op_formula_for(aten.mul.Tensor).count(real_of((x, y), {}, x * y))),
        "pow": (3, sum(op_formula_for(aten.pow.Tensor_Scalar).count(real_of((x, e), {}, x))
                       for e in (2, 3, 3))),
    }  # fmt: skip
    (record,) = p.records
    assert dict(record.config.ops) == {name: calls for name, (calls, _) in expected.items()}
    assert record.ops == sum(ops for _, ops in expected.values())
    assert p.total_ops == record.ops
    with Profiler(net) as again:
        net[0](x, y)
    assert len(described) == 4
    assert again.records == p.records
    # Bounded: emptied when full (here at pow(3)), with the same results.
    monkeypatch.setattr(capture, "_descriptions", {})
    monkeypatch.setattr(capture, "_DESCRIPTIONS_KEPT", 2)
    with Profiler(net) as bounded:
        net[0](x, y)
    assert len(described) == 8
    assert len(capture._descriptions) == 2  # pow(3) and cat
    assert bounded.records == p.records


def test_the_process_descriptions_keep_no_tensor_storage_or_generator() -> None:
    # They outlive the block: shapes and plain values only. A storage (set_ rebuilds every
    # batch a DataLoader's workers send, and every tensor torch.load reads) holds its memory,
    # and a new one at each call would be a new key: it is known by its class, as a generator.
    class Work(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            rebuilt = torch.empty(0).set_(x.clone().untyped_storage(), 0, x.shape, x.stride())
            noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
            pieces = torch.cat([rebuilt, x * 2 + noise]).split(1)
            return torch.stack(list(pieces)).clamp(min=x.min()).softmax(-1)

    net = nn.Sequential(Work())
    x = torch.randn(2, 5)
    storages = []
    real_set = torch.Tensor.set_

    def noted_set(tensor: torch.Tensor, source: object, *args: object) -> torch.Tensor:
        storages.append(weakref.ref(source))
        return real_set(tensor, source, *args)

    with Profiler(net, summary=True) as p:
        torch.Tensor.set_ = noted_set  # type: ignore[method-assign]
        try:
            for _ in range(3):
                y = net(x)
        finally:
            torch.Tensor.set_ = real_set  # type: ignore[method-assign]
    distinct, _ = p._block.log.snapshot()
    assert sum(1 for call in distinct if "set_" in str(getattr(call, "op", ""))) == 1
    refs = [weakref.ref(t) for t in (x, y)] + storages
    del x, y, p
    gc.collect()
    assert len(refs) == 5 and [ref() for ref in refs] == [None] * 5

    def held(value: object) -> Iterator[object]:
        yield value
        if isinstance(value, (tuple, list)):
            for item in value:
                yield from held(item)
        elif dataclasses.is_dataclass(value):
            for field in dataclasses.fields(value):
                yield from held(getattr(value, field.name))

    kept = list(held(list(capture._descriptions.items())))
    assert any(isinstance(value, OpCall) for value in kept)
    opaque = (torch.Tensor, torch.UntypedStorage, torch.Generator)
    assert not any(isinstance(value, opaque) for value in kept)


def test_a_nan_argument_is_one_distinct_call() -> None:
    # A NaN equals no NaN: each call's new one would be a new key, in the block and in the
    # process's descriptions.
    net = nn.Linear(4, 4)
    before = len(capture._descriptions)
    with Profiler(net, summary=True) as p:
        for _ in range(20):
            F.pad(net(torch.randn(2, 4)), (1, 1), value=float("nan"))
            torch.full((2,), complex(float("nan"), 0))
    assert len(p._block.mode._codes) == 3  # randn, constant_pad_nd and full
    assert len(capture._descriptions) <= before + 3


def test_a_new_scalar_result_is_not_a_new_distinct_call() -> None:
    # An .item() in every step returns a new value; the log keeps no operator's output
    # value, so a long block's lookup table stays as small as its distinct calls.
    net = nn.Linear(8, 1)
    with Profiler(net, summary=True) as p:
        for _ in range(50):
            net(torch.randn(4, 8)).sum().item()
    distinct, _ = p._block.log.snapshot()
    assert len(p._block.mode._codes) <= len(distinct) == 4  # the Linear, randn, sum, item


class AddOne(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1


class Doubled(nn.Sequential):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2


def test_a_plain_sequential_leaves_the_operators_mode_once_for_its_children(monkeypatch) -> None:
    # Leaving the dispatch mode costs more than logging a call: a plain nn.Sequential, which
    # runs no operator of its own, leaves it once for all its counted children, while a
    # child that runs operators (AddOne) and a Sequential with a forward of its own have
    # theirs counted.
    pops = []
    real_pop = capture._pop_dispatch_mode
    monkeypatch.setattr(capture, "_pop_dispatch_mode", lambda *a: (pops.append(1), real_pop(*a))[1])
    net = nn.Sequential(
        nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU()), AddOne(),
        Doubled(nn.Conv2d(4, 4, 1)),
    )  # fmt: skip
    x = torch.randn(1, 3, 5, 5)
    with Profiler(net) as p:
        net(x)
    # the root leaves it; AddOne and Doubled come back and leave again; Doubled's Conv2d
    # leaves it for its call.
    assert len(pops) == 4
    functional = {(r.name, r.config.ops) for r in p.records if r.family == "functional"}
    assert functional == {("3", (("add", 1),)), ("4", (("mul", 1),))}
    counted = [(r.name, r.family) for r in p.records if r.family != "functional"]
    assert counted == [
        ("0", "Conv2d"),
        ("1", "ReLU"),
        ("2.0", "Conv2d"),
        ("2.1", "ReLU"),
        ("4.0", "Conv2d"),
    ]


def test_the_log_of_module_calls_is_left_alone_by_the_garbage_collector() -> None:
    # A profiled forward keeps one entry per distinct module call. Kept with torch.Size
    # shapes, every entry stays tracked by the garbage collector and brings on its full
    # collections (100 ms and more in a process that imported torch); as plain tuples of
    # ints and dtypes, the collector stops tracking them.
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 2))
    with Profiler(net) as p:
        net(torch.randn(2, 3, 6, 6))
    distinct, _ = p._block.log.snapshot()
    calls = [call for call in distinct if isinstance(call, tuple)]
    assert len(calls) == 4
    assert all(type(shape) is tuple for call in calls for shape, _ in (*call[1], *call[2]))
    for _ in range(4):  # the collector untracks one level of nesting per collection
        gc.collect()
    assert not any(gc.is_tracked(call) for call in calls)
    assert p.total_ops == sum(r.ops for r in p.records)


def test_what_runs_between_a_sequentials_children_is_counted() -> None:
    # A plain nn.Sequential leaves the operators' mode for its children, unless something
    # else runs between them: a pruned child's forward pre-hook (weight_orig * mask) or a
    # global forward hook; their operators are counted, in the Sequential's record.
    net = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU()))
    torch.nn.utils.prune.l1_unstructured(net[0][0], "weight", amount=0.5)
    x = torch.randn(1, 3, 5, 5)
    with Profiler(net) as p:
        net(x)
    assert [(r.name, r.config.ops) for r in p.records if r.family == "functional"] == [
        ("0", (("mul", 1),))
    ]
    unpruned = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU()))
    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: o + 0)
    try:
        with Profiler(unpruned) as p:
            unpruned(x)
    finally:
        handle.remove()
    adds = {r.name: r.config.ops for r in p.records if r.family == "functional"}
    # the hook of the model itself runs after its forward: the block's work outside it
    assert adds == {"0": (("add", 2),), "": (("add", 1),), OUTSIDE_NAME: (("add", 1),)}


class Tripled(nn.Module):
    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # work outside its forward
        return super().__call__(x * 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _insert_a_child(net: nn.Sequential) -> None:
    net.insert(1, AddOne())


def _hook_a_child(net: nn.Sequential) -> None:
    net[0].register_forward_hook(lambda module, args, output: output * 3)


def _replace_a_childs_forward(net: nn.Sequential) -> None:
    net[1].forward = lambda x: x * 3


def _override_a_childs_call(net: nn.Sequential) -> None:
    net[1].__class__ = Tripled


@pytest.mark.parametrize(
    "change", [_insert_a_child, _hook_a_child, _replace_a_childs_forward, _override_a_childs_call]
)
def test_a_sequential_changed_during_the_block_has_its_new_work_counted(change) -> None:
    # Whether a plain nn.Sequential may leave the operators' mode is decided at each call:
    # a child inserted, hooked, given a forward or a __call__ of its own during the block
    # runs operators between its children, counted in the Sequential's record.
    net = nn.Sequential(nn.Linear(4, 4), nn.Identity(), nn.ReLU())
    x = torch.randn(2, 4)
    with Profiler(net) as p:
        net(x)
        change(net)
        net(x)
    functional = [(r.name, r.calls, r.ops) for r in p.records if r.family == "functional"]
    assert functional == [("", 1, 8)]


class Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(4, 4), AddOne(), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * 2


def test_another_dispatch_mode_or_profiler_inside_the_block_changes_no_count() -> None:
    # Under another dispatch mode entered in the block (a FlopCounterMode, or a second
    # profiler's), the operators reach this profiler's mode through it: a scope must not
    # push it again, or it would see each of its operators twice.
    net = Scaled()
    x = torch.randn(2, 4)
    with Profiler(net) as alone:
        net(x)
    expected = [(r.name, r.ops) for r in alone.records]
    assert ("inner.1", 8) in expected and ("", 8) in expected
    with Profiler(net) as outer, FlopCounterMode(display=False) as flops:
        net(x)
    assert [(r.name, r.ops) for r in outer.records] == expected
    assert flops.get_total_flops() == 2 * 2 * 4 * 4
    with Profiler(net) as outer, Profiler(net.inner) as inner:
        net(x)
    assert [(r.name, r.ops) for r in outer.records] == expected
    assert [("inner." + r.name, r.ops) for r in inner.records] == [
        (name, ops) for name, ops in expected if name.startswith("inner.")
    ]


def test_entering_creates_few_objects_for_the_garbage_collector() -> None:
    # Entering gives each module a forward for the block. The objects it creates live as long
    # as the block, so the collector promotes them to its oldest generation, whose growth
    # brings full collections (100 ms and more in a process that imported torch): one object
    # per module, holding what each call needs, instead of a closure and its cells.
    def created(blocks: int) -> tuple[int, int]:
        net = nn.Sequential(*(nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU(), AddOne()) for _ in range(blocks)))
        gc.collect()
        gc.disable()
        try:
            before = gc.get_count()[0]
            profiler = Profiler(net)
            profiler.__enter__()
            objects = gc.get_count()[0] - before
            profiler.__exit__(None, None, None)
        finally:
            gc.enable()
        return objects, len(list(net.modules()))

    (fewer, small), (more, large) = created(10), created(30)
    assert (more - fewer) / (large - small) <= 5  # the forward, its bound method, a name, ...


def test_a_counted_module_profiled_alone_forgets_the_nodes_of_its_past_forwards() -> None:
    # The autograd nodes a forward claimed are remembered until the next forward of the
    # model begins; a counted module profiled alone begins one at each call.
    linear = nn.Linear(4, 4)
    with Profiler(linear) as p:
        outputs = [linear(torch.randn(2, 4)) for _ in range(50)]  # kept: no id is reused
        assert len(p._block.tracker._claimed) <= 8  # the last forward's nodes
    assert len(outputs) == 50


def test_calls_with_the_same_input_are_told_apart_by_dtype_mode_and_output() -> None:
    # A plain call (one tensor in, one out) is numbered by a flat key of what it read: its
    # input's shape and dtype, its output's, and the module's mode. Each call below differs
    # from the one before it in one of those only, so each must be a record of its own.
    flatten = nn.Flatten()
    x = torch.randn(2, 3, 4)
    with Profiler(flatten) as profiler:
        flatten(x)
        flatten(x.double())  # another dtype, in and out
        flatten.eval()
        flatten(x.double())  # another mode
        flatten.start_dim = 2
        flatten(x.double())  # another output shape
        flatten(x[:1].double())  # another input shape
        flatten(x[:1].double())  # the same call again
    records = profiler.records
    assert [(r.input_shapes, r.output_shapes, r.training) for r in records] == [
        (((2, 3, 4),), ((2, 12),), True),
        (((2, 3, 4),), ((2, 12),), True),
        (((2, 3, 4),), ((2, 12),), False),
        (((2, 3, 4),), ((2, 3, 4),), False),
        (((1, 3, 4),), ((1, 3, 4),), False),
        (((1, 3, 4),), ((1, 3, 4),), False),
    ]
    assert [r.input_bytes for r in records[:2]] == [2 * 3 * 4 * 4, 2 * 3 * 4 * 8]


def test_calls_told_apart_by_one_dtype_alone() -> None:
    # The input's dtype alone (an embedding's indices), the output's alone (autocast).
    embedding, linear = nn.Embedding(10, 4), nn.Linear(4, 4)
    indices, x = torch.tensor([1, 2, 3]), torch.randn(3, 4)
    with Profiler(embedding) as lookups:
        embedding(indices)
        embedding(indices.int())
    with Profiler(linear) as products:
        linear(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            linear(x)
    assert [r.input_bytes for r in lookups.records] == [3 * 8, 3 * 4]
    assert [r.output_bytes for r in products.records] == [3 * 4 * 4, 3 * 4 * 2]


def test_calls_not_plain_are_numbered_the_slow_way_with_the_same_result() -> None:
    # A parameter, a keyword argument or a nested tensor takes the general path; a plain call
    # of the same shapes after it finds its own number, not theirs.
    linear = nn.Linear(4, 2)
    x = torch.randn(3, 4)
    with Profiler(linear) as profiler:
        linear(nn.Parameter(x))
        linear(input=x)
        linear(x)
        linear(x)
    assert [(r.input_shapes, r.output_shapes, r.ops) for r in profiler.records] == [
        (((3, 4),), ((3, 2),), 3 * 2 * (2 * 4)),
    ] * 4
