"""The model zoo: torchvision's models by name, timm's and transformers' (through
:mod:`opscope.libraries`), or a user's own factory, built cheaply and without weights.

Counting needs shapes only, so models are built on the ``meta`` device by default (see
:mod:`opscope.meta`): no weight initialisation and no memory.
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torchvision
from torch import nn

from opscope import libraries
from opscope.catalogue import CUSTOM, TORCHVISION, ZooError, ZooModel
from opscope.inputs import InputSpec
from opscope.meta import build_on_meta

LIBRARY_SOURCES = ("timm", "hf")
"""The sources built by :mod:`opscope.libraries`: no published figures, their own inputs."""

DEFAULT_INPUTS: dict[str, tuple[int, ...]] = {
    "classification": (1, 3, 224, 224),
    "detection": (1, 3, 224, 224),
    "segmentation": (1, 3, 224, 224),
    "video": (1, 3, 16, 112, 112),
    "optical_flow": (1, 3, 224, 224),
    "quantization": (1, 3, 224, 224),
    CUSTOM: (1, 3, 224, 224),
}
"""The input each task gets when none is given (video: N×C×T×H×W)."""

# The published metric of each task's weights: the dataset it was measured on, its key there,
# and how tables name it.
_METRICS = (
    ("ImageNet-1K", "acc@1", "acc@1"),
    ("Kinetics-400", "acc@1", "acc@1"),
    ("COCO-val2017", "box_map", "box mAP"),
    ("COCO-val2017-VOC-labels", "miou", "mIoU"),
    ("Sintel-Test-Cleanpass", "epe", "EPE"),
    ("Sintel-Train-Cleanpass", "epe", "EPE"),
)


@dataclass(frozen=True)
class PublishedMetrics:
    """What torchvision publishes for a model's default weights (shipped in its code).

    Attributes:
        metric: how the quality figure is named (``acc@1``, ``box mAP``, ``mIoU``, ``EPE``).
        value: the quality figure.
        dataset: what it was measured on (``ImageNet-1K``, ``COCO-val2017``, ...).
        gflops: torchvision's "GFLOPS": multiply-accumulates of the whole model in billions
            (``FlopCounterMode`` total / 2).
        size: the image size both were measured at, when torchvision says it (the weights'
            crop or resize size); None for detection and optical flow models, which size
            their input themselves.
    """

    metric: str | None = None
    value: float | None = None
    dataset: str | None = None
    gflops: float | None = None
    size: int | None = None

    @property
    def acc1(self) -> float | None:
        """The top-1 accuracy, for a classification (ImageNet) or video (Kinetics) model."""
        return self.value if self.metric == "acc@1" else None


def published_metrics(model: ZooModel) -> PublishedMetrics:
    """torchvision's published quality figure and GFLOPS of ``model``'s default weights
    (nothing for other sources, whose figures opscope does not ship)."""
    if model.source != TORCHVISION:
        return PublishedMetrics()
    try:
        weights = torchvision.models.get_model_weights(model.name).DEFAULT
    except (ValueError, AttributeError):
        return PublishedMetrics()
    meta = weights.meta
    measured = meta.get("_metrics", {})
    found = next(
        ((label, measured[dataset][key], dataset) for dataset, key, label in _METRICS
         if key in measured.get(dataset, {})),
        (None, None, None),
    )  # fmt: skip
    keywords = getattr(weights.transforms, "keywords", {})
    size = keywords.get("crop_size", keywords.get("resize_size"))
    if isinstance(size, (tuple, list)):  # video weights give (height, width)
        size = size[0]
    return PublishedMetrics(*found, gflops=meta.get("_ops"), size=size)


def default_inputs(model: ZooModel) -> list[InputSpec]:
    """What ``model`` runs on when no input is given: a timm model one image at its
    pretrained configuration's size, a transformers model the inputs its forward takes
    (:func:`opscope.libraries.hf_inputs`), any other the one input of :func:`default_input`.
    """
    if model.source == "timm":
        return [InputSpec(libraries.timm_input(model.architecture))]
    if model.source == "hf":
        return libraries.hf_inputs(model.architecture)
    return [InputSpec(default_input(model))]


def default_input(model: ZooModel) -> tuple[int, ...]:
    """The shape of the model's first default input: its task's default input (a video
    model's frames at its weights' size), or the first of :func:`default_inputs`."""
    if model.source in LIBRARY_SOURCES:
        return default_inputs(model)[0].shape
    shape = DEFAULT_INPUTS[model.task]
    size = published_metrics(model).size if model.task == "video" else None
    return (*shape[:-2], size, size) if size else shape


def published_inputs(model: ZooModel) -> list[InputSpec] | None:
    """What ``model`` runs on with ``--published-size``: :func:`published_input` for an image
    model, a transformers model's default inputs, and for a user's factory None: what it
    runs on without the option, its own example inputs or the default (neither has a
    published size)."""
    if model.source == CUSTOM:
        return None
    if model.source == "hf":
        return default_inputs(model)
    return [InputSpec(published_input(model))]


def published_input(model: ZooModel) -> tuple[int, ...]:
    """The input its published figures were measured at: the task's default input with the
    weights' size as height and width (the default when torchvision does not say; a timm
    model's pretrained configuration gives its own)."""
    if model.source in LIBRARY_SOURCES:
        return default_input(model)
    shape = DEFAULT_INPUTS[model.task]
    size = published_metrics(model).size
    return (*shape[:-2], size, size) if size else default_input(model)


# Architectures built for one input size (position embeddings, window grids), by the module
# of their builder, and the builder argument that sets it.
_SIZED_BUILDERS = {
    "torchvision.models.vision_transformer": lambda size: {"image_size": size[0]},
    "torchvision.models.maxvit": lambda size: {"input_size": size},
}


def _factory(
    model: ZooModel, image_size: tuple[int, int] | None, input_shape: Sequence[int] | None
) -> Callable[[], nn.Module]:
    if model.source == "timm":
        return libraries.timm_factory(model.architecture, input_shape)
    if model.source == "hf":
        return libraries.hf_factory(model.architecture, input_shape)
    if model.source == TORCHVISION:
        builder = torchvision.models.get_model_builder(model.name)
        # No download, ever: detection and segmentation builders fetch backbone weights
        # unless told not to.
        arguments: dict[str, Any] = {
            name: None
            for name in inspect.signature(builder).parameters
            if name.startswith("weights")
        }
        sized = _SIZED_BUILDERS.get(builder.__module__)
        if sized is not None and image_size is not None and image_size[0] == image_size[1]:
            arguments.update(sized(image_size))  # vit_h_14 is published at 518, not 224
        return lambda: builder(**arguments)
    module_path, _, attribute = model.name.partition(":")
    try:
        factory = getattr(importlib.import_module(module_path), attribute)
    except ImportError as error:
        raise ZooError(f"cannot import {module_path!r} for {model.name!r}: {error}") from None
    except AttributeError:
        raise ZooError(f"{module_path!r} has no attribute {attribute!r}") from None
    if not callable(factory):
        raise ZooError(f"{model.name!r} is not callable")
    return factory


@dataclass(frozen=True)
class Example:
    """The arguments of one forward pass."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]


def _on_device(value: Any, device: torch.device) -> Any:
    """``value`` with every tensor in it moved to ``device``."""
    if isinstance(value, torch.Tensor):
        return value if value.device == device else value.to(device)
    if isinstance(value, (tuple, list)):
        return type(value)(_on_device(item, device) for item in value)
    if isinstance(value, dict):
        return {key: _on_device(item, device) for key, item in value.items()}
    return value


def _as_example(given: Any, device: torch.device) -> Example:
    """A factory's example input (a tensor, a tuple or list of arguments, or a dict of
    keyword arguments) as the arguments of a forward pass on ``device``."""
    given = _on_device(given, device)
    if isinstance(given, dict):
        return Example((), given)
    if isinstance(given, (tuple, list)):
        return Example(tuple(given), {})
    return Example((given,), {})


def instantiate(
    model: ZooModel,
    device: str | torch.device = "meta",
    input_shape: Sequence[int] | None = None,
) -> tuple[nn.Module, Example | None]:
    """Build ``model`` with ``weights=None`` (timm: ``pretrained=False``; transformers: its
    default configuration) on ``device``, in eval mode, and the example input its factory
    gave, if any (a user's factory may return ``(model, example_inputs)``: a tensor, a tuple
    of arguments or a dict of keyword arguments).

    An architecture built for one image size (the vision transformers, MaxViT, timm's and
    transformers' fixed-size models) is built for the height and width of ``input_shape``
    when given, as torchvision does for weights published at another size. On ``meta``
    nothing is initialised or allocated (:func:`opscope.meta.build_on_meta`).

    Raises:
        ZooError: the factory cannot be imported, or does not return a ``torch.nn.Module``.
        MissingExtra: a timm or transformers model without that library.
    """
    image_size = (
        (input_shape[-2], input_shape[-1]) if input_shape and len(input_shape) > 1 else None
    )
    factory = _factory(model, image_size, input_shape)
    with warnings.catch_warnings():
        # torchvision warns about its default initialisation, which weights=None does not use
        warnings.filterwarnings("ignore", "The default weight initialization", FutureWarning)
        if torch.device(device).type == "meta":
            built = build_on_meta(factory)
        else:
            with torch.device(device):
                built = factory()
    example = None
    if isinstance(built, tuple) and len(built) == 2 and isinstance(built[0], nn.Module):
        built, given = built
        example = _as_example(given, torch.device(device))
    if not isinstance(built, nn.Module):
        raise ZooError(
            f"{model.name!r} returned {type(built).__name__}, not a torch.nn.Module "
            "(or a (module, example_inputs) pair)"
        )
    return built.eval(), example


def build(
    model: ZooModel,
    device: str | torch.device = "meta",
    input_shape: Sequence[int] | None = None,
) -> nn.Module:
    """The module of :func:`instantiate`."""
    return instantiate(model, device, input_shape)[0]


def _tensor(spec: InputSpec, device: torch.device) -> torch.Tensor:
    dtype = getattr(torch, spec.dtype)
    if device.type == "meta":
        return torch.empty(spec.shape, dtype=dtype, device=device)
    if dtype.is_floating_point:
        return torch.randn(spec.shape, dtype=dtype, device=device)
    if spec.name is not None and spec.name.endswith("mask"):  # attention_mask: nothing masked
        return torch.ones(spec.shape, dtype=dtype, device=device)
    return torch.zeros(spec.shape, dtype=dtype, device=device)  # a valid token id


def example_input(
    model: ZooModel, inputs: Sequence[InputSpec] | Sequence[int], device: str | torch.device
) -> Example:
    """The arguments of a forward pass on ``inputs`` (or on one float input of that shape).

    Positional inputs are passed in order, named ones as keywords. Given one image batch,
    detection models take it as a list of ``C×H×W`` images, optical flow models as both
    frames.
    """
    specs = [InputSpec(tuple(inputs))] if inputs and isinstance(inputs[0], int) else list(inputs)
    where = torch.device(device)
    args = tuple(_tensor(spec, where) for spec in specs if spec.name is None)  # type: ignore[union-attr]
    kwargs = {spec.name: _tensor(spec, where) for spec in specs if spec.name is not None}  # type: ignore[union-attr]
    if len(args) == 1 and not kwargs:
        if model.task == "detection":
            return Example((list(args[0]),), {})
        if model.task == "optical_flow":
            return Example((args[0], args[0]), {})
    return Example(args, kwargs)


def preload(models: Sequence[ZooModel]) -> None:
    """Import the libraries ``models`` come from, once, before worker processes fork from
    this one (each would import them again otherwise).

    Raises:
        MissingExtra: a library is not installed.
    """
    for source in sorted({model.source for model in models} & set(LIBRARY_SOURCES)):
        libraries.load(source)
