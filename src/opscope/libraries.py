"""Models of the optional libraries: timm's architectures (``timm:convnext_tiny``), built from
the library's own code and default configuration, never from downloaded weights.

* **timm**: ``timm.create_model(name, pretrained=False)``, for the input size its pretrained
  configuration ships (``pretrained_cfg['input_size']``: 288×288 for EfficientNet-B3, 384×384
  for ``vit_base_patch16_384``), or for the size of the input given: timm builds the models
  that have a fixed input size (position embeddings) for it, and every model for its channels.

Everything is built with the Hugging Face hub switched offline (:func:`offline`), so that even
a library's mistake cannot fetch anything. Importing the library imports torch: this
module is only used once a model is built.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from torch import nn

from opscope.catalogue import EXTRAS, MissingExtra, missing_extra

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
"""The environment variables that switch the Hugging Face hub (and transformers) offline."""
IMAGE_SIZE = 224
"""A vision model's default image size when its configuration does not say one."""
_TRUE = {"1", "ON", "YES", "TRUE"}  # how huggingface_hub reads a switch from the environment


@contextmanager
def offline() -> Iterator[None]:
    """Switch the Hugging Face hub offline while the block runs: ``HF_HUB_OFFLINE=1`` (and
    ``TRANSFORMERS_OFFLINE=1``) in the environment, which a hub imported inside the block
    reads, and in ``huggingface_hub.constants`` where it is already imported. Both are put
    back afterwards, so that a user's own hub calls are not changed."""
    saved = {name: os.environ.get(name) for name in OFFLINE_VARIABLES}
    os.environ.update(dict.fromkeys(OFFLINE_VARIABLES, "1"))
    constants = sys.modules.get("huggingface_hub.constants")
    previous = getattr(constants, "HF_HUB_OFFLINE", None)
    if constants is not None:
        constants.HF_HUB_OFFLINE = True  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        constants = sys.modules.get("huggingface_hub.constants")
        if constants is not None:  # imported before the block, or inside it
            from_environment = any(
                (os.environ.get(name) or "").upper() in _TRUE for name in OFFLINE_VARIABLES
            )
            constants.HF_HUB_OFFLINE = from_environment if previous is None else previous  # type: ignore[attr-defined]


def load(source: str) -> ModuleType:
    """Import ``source``'s library (``timm``), offline.

    Raises:
        MissingExtra: it is not installed; the message names the extra that installs it.
    """
    package = EXTRAS[source][0]
    with offline():
        try:
            return importlib.import_module(package)
        except ImportError:
            raise MissingExtra(missing_extra(source)) from None


# -- timm -----------------------------------------------------------------------------------


def timm_input(architecture: str) -> tuple[int, ...]:
    """The input of a batch of one at the size of the architecture's pretrained configuration
    (``(1, 3, 224, 224)`` for ``resnet50``, ``(1, 3, 288, 288)`` for ``efficientnet_b3``)."""
    load("timm")
    from timm.models import get_pretrained_cfg

    config = get_pretrained_cfg(architecture)
    return (1, *config.input_size) if config is not None else (1, 3, IMAGE_SIZE, IMAGE_SIZE)


def timm_factory(
    architecture: str, input_shape: Sequence[int] | None = None
) -> Callable[[], nn.Module]:
    """What builds the architecture without weights (``pretrained=False``: timm loads nothing,
    backbones included), for ``input_shape``'s channels and size when it is an image batch
    (N×C×H×W): its pretrained configuration's ``input_size`` is overlaid with it, which timm
    passes on as ``in_chans`` and, to the models built for one size, as ``img_size``."""
    timm = load("timm")
    overlay = (
        {"input_size": tuple(input_shape[1:])} if input_shape and len(input_shape) == 4 else None
    )

    def build() -> nn.Module:
        with offline():
            return timm.create_model(architecture, pretrained=False, pretrained_cfg_overlay=overlay)

    return build
