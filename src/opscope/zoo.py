"""The model zoo: torchvision's models by name, or a user's own factory, built cheaply.

Counting needs shapes only, so models are built on the ``meta`` device by default (see
:mod:`opscope.meta`): no weight initialisation and no memory.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import inspect
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch
import torchvision
from torch import nn

from opscope.meta import build_on_meta

# torchvision's model families, by the sub-package that holds their builders.
_TASK_MODULES = {
    "classification": torchvision.models,
    "detection": torchvision.models.detection,
    "segmentation": torchvision.models.segmentation,
    "video": torchvision.models.video,
    "optical_flow": torchvision.models.optical_flow,
    "quantization": torchvision.models.quantization,
}

DEFAULT_INPUTS: dict[str, tuple[int, ...]] = {
    "classification": (1, 3, 224, 224),
    "detection": (1, 3, 224, 224),
    "segmentation": (1, 3, 224, 224),
    "video": (1, 3, 16, 112, 112),
    "optical_flow": (1, 3, 224, 224),
    "quantization": (1, 3, 224, 224),
    "custom": (1, 3, 224, 224),
}
"""The input each task gets when none is given (video: N×C×T×H×W)."""


class ZooError(Exception):
    """A model name that cannot be resolved or built; its message is meant for the user."""


@dataclass(frozen=True)
class ZooModel:
    """A model opscope can build by name.

    Attributes:
        name: the torchvision name (``"resnet50"``) or ``"package.module:callable"``.
        task: ``classification``, ``detection``, ``segmentation``, ``video``,
            ``optical_flow``, ``quantization``, or ``custom`` for a user's factory.
    """

    name: str
    task: str

    @property
    def published_input(self) -> tuple[int, ...]:
        """The input its published figures were measured at: the task's default input with
        the weights' evaluation size as height and width (the default when none is known)."""
        shape = DEFAULT_INPUTS[self.task]
        crop = published_metrics(self).crop_size
        return (*shape[:-2], crop, crop) if crop else self.default_input

    @property
    def default_input(self) -> tuple[int, ...]:
        """The task's default input; a video model's frames get its weights' crop size."""
        shape = DEFAULT_INPUTS[self.task]
        crop = published_metrics(self).crop_size if self.task == "video" else None
        return (*shape[:-2], crop, crop) if crop else shape


@dataclass(frozen=True)
class PublishedMetrics:
    """What torchvision publishes for a model's default weights (shipped in its code).

    ``gflops`` is torchvision's "GFLOPS": multiply-accumulates of the whole model in billions
    (``FlopCounterMode`` total / 2), at the weights' own evaluation size ``crop_size``.
    """

    acc1: float | None
    gflops: float | None
    crop_size: int | None


@cache
def _catalogue() -> dict[str, str]:
    names: dict[str, str] = {}
    for task, module in _TASK_MODULES.items():
        for name in torchvision.models.list_models(module=module):
            names.setdefault(name, task)
    return dict(sorted(names.items()))


def list_models(pattern: str | None = None, task: str | None = None) -> list[ZooModel]:
    """torchvision's models, by name, optionally filtered by a glob and a task.

    Example:
        >>> [m.name for m in list_models("resnet1*")]
        ['resnet101', 'resnet152', 'resnet18']
    """
    return [
        ZooModel(name, model_task)
        for name, model_task in _catalogue().items()
        if (pattern is None or fnmatch.fnmatchcase(name, pattern))
        and (task is None or model_task == task)
    ]


def is_factory_path(name: str) -> bool:
    """``package.module:callable`` names a user's own model factory."""
    return ":" in name


def resolve(patterns: Sequence[str]) -> list[ZooModel]:
    """Expand names and globs (``'resnet*'``, ``'efficientnet_b?'``) into models, in the order
    given, each once.

    Raises:
        ZooError: a name that is not known, with the closest known names; or a glob that
            matches nothing.
    """
    resolved: dict[str, ZooModel] = {}
    for pattern in patterns:
        if is_factory_path(pattern):
            resolved.setdefault(pattern, ZooModel(pattern, "custom"))
            continue
        matches = list_models(pattern)
        if not matches:
            raise ZooError(_unknown_message(pattern))
        for model in matches:
            resolved.setdefault(model.name, model)
    return list(resolved.values())


def _unknown_message(pattern: str) -> str:
    if any(char in pattern for char in "*?["):
        return f"no model matches {pattern!r} (see 'opscope list')"
    close = difflib.get_close_matches(pattern, _catalogue(), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else " (see 'opscope list')"
    return f"unknown model {pattern!r}{hint}"


# Architectures built for one input size (position embeddings, window grids), by the module
# of their builder, and the builder argument that sets it.
_SIZED_BUILDERS = {
    "torchvision.models.vision_transformer": lambda size: {"image_size": size[0]},
    "torchvision.models.maxvit": lambda size: {"input_size": size},
}


def _factory(model: ZooModel, image_size: tuple[int, int] | None) -> Callable[[], nn.Module]:
    if model.task != "custom":
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


def build(
    model: ZooModel,
    device: str | torch.device = "meta",
    input_shape: Sequence[int] | None = None,
) -> nn.Module:
    """Build ``model`` with ``weights=None`` on ``device``, in eval mode.

    An architecture built for one image size (the vision transformers, MaxViT) is built for
    the height and width of ``input_shape`` when given, as torchvision does for weights
    published at another size.

    On ``meta`` nothing is initialised or allocated (:func:`opscope.meta.build_on_meta`).

    Raises:
        ZooError: the factory cannot be imported, or does not return a ``torch.nn.Module``.
    """
    image_size = (input_shape[-2], input_shape[-1]) if input_shape else None
    factory = _factory(model, image_size)
    with warnings.catch_warnings():
        # torchvision warns about its default initialisation, which weights=None does not use
        warnings.filterwarnings("ignore", "The default weight initialization", FutureWarning)
        if torch.device(device).type == "meta":
            built = build_on_meta(factory)
        else:
            with torch.device(device):
                built = factory()
    if not isinstance(built, nn.Module):
        raise ZooError(f"{model.name!r} returned {type(built).__name__}, not a torch.nn.Module")
    return built.eval()


def example_input(
    model: ZooModel, shape: Sequence[int], device: str | torch.device
) -> tuple[Any, ...]:
    """The positional arguments of a forward pass on an input of ``shape``.

    Detection models take a list of ``C×H×W`` images, optical flow models two frames.
    """
    if torch.device(device).type == "meta":
        x = torch.empty(tuple(shape), device=device)
    else:
        x = torch.randn(tuple(shape), device=device)
    if model.task == "detection":
        return (list(x),)
    if model.task == "optical_flow":
        return (x, x)
    return (x,)


def published_metrics(model: ZooModel) -> PublishedMetrics:
    """torchvision's published ImageNet acc@1 and GFLOPS of ``model``'s default weights."""
    if model.task == "custom":
        return PublishedMetrics(None, None, None)
    try:
        weights = torchvision.models.get_model_weights(model.name).DEFAULT
    except (ValueError, AttributeError):
        return PublishedMetrics(None, None, None)
    meta = weights.meta
    acc1 = meta.get("_metrics", {}).get("ImageNet-1K", {}).get("acc@1")
    crop_size = getattr(weights.transforms, "keywords", {}).get("crop_size")
    if isinstance(crop_size, (tuple, list)):  # video weights give (height, width)
        crop_size = crop_size[0]
    return PublishedMetrics(acc1, meta.get("_ops"), crop_size)
