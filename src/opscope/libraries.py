"""Models of the optional libraries: timm's architectures (``timm:convnext_tiny``) and Hugging
Face transformers' model types (``hf:bert``), built from the library's own code and default
configuration, never from downloaded weights or configurations.

* **timm**: ``timm.create_model(name, pretrained=False)``, for the input size its pretrained
  configuration ships (``pretrained_cfg['input_size']``: 288×288 for EfficientNet-B3, 384×384
  for ``vit_base_patch16_384``), or for the size of the input given: timm builds the models
  that have a fixed input size (position embeddings) for it, and every model for its channels.
* **transformers**: ``AutoModel.from_config(AutoConfig.for_model(model_type))``, the library's
  default configuration of the type (BERT-base for ``bert``, GPT-2 small for ``gpt2``); a
  vision model is built for the image size given. Its default inputs follow what its forward
  takes (:func:`hf_inputs`).

Everything is built with the Hugging Face hub switched offline (:func:`offline`), so that even
a library's mistake cannot fetch anything. Importing either library imports torch: this
module is only used once a model is built.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from torch import nn

from opscope.catalogue import EXTRAS, MissingExtra, ZooError, missing_extra
from opscope.inputs import InputSpec

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
"""The environment variables that switch the Hugging Face hub (and transformers) offline."""
TEXT_LENGTH = 128
"""Tokens of a text model's default input (fewer when the model has fewer positions)."""
IMAGE_SIZE = 224
"""A vision model's default image size when its configuration does not say one."""
AUDIO_SAMPLES = 16_000
"""A raw-audio model's default input: one second at 16 kHz."""
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


@contextmanager
def _quiet(transformers: ModuleType) -> Iterator[None]:
    """transformers' log at errors only while the block runs: its notes on a default
    configuration (token ids outside an empty vocabulary, ...) are not the user's concern."""
    logging = transformers.utils.logging
    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)


def load(source: str) -> ModuleType:
    """Import ``source``'s library (``timm`` or ``hf``), offline.

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


# -- transformers ---------------------------------------------------------------------------


def hf_config(model_type: str) -> Any:
    """The default configuration transformers has for ``model_type`` (never from the hub)."""
    transformers = load("hf")
    with offline(), _quiet(transformers):
        try:
            return transformers.AutoConfig.for_model(model_type)
        except (ValueError, KeyError) as error:
            raise ZooError(f"hf:{model_type}: {str(error).splitlines()[0]}") from None


def _model_class(config: Any) -> type[nn.Module]:
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    found = MODEL_MAPPING[type(config)]
    return found[0] if isinstance(found, (tuple, list)) else found


def _image_size(config: Any) -> int:
    size = getattr(config, "image_size", None) or IMAGE_SIZE
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def hf_factory(
    model_type: str, input_shape: Sequence[int] | None = None
) -> Callable[[], nn.Module]:
    """What builds ``AutoModel.from_config`` of the type's default configuration; a vision
    model (one whose configuration has an ``image_size``) is built for ``input_shape``'s
    size when that is a square image batch (N×C×H×W)."""
    transformers = load("hf")
    config = hf_config(model_type)
    square = (
        input_shape is not None and len(input_shape) == 4 and input_shape[-1] == input_shape[-2]
    )
    if square and hasattr(config, "image_size"):
        config.image_size = int(input_shape[-1])  # type: ignore[index]
        if hasattr(config, "num_channels"):
            config.num_channels = int(input_shape[1])  # type: ignore[index]

    def build() -> nn.Module:
        with offline(), _quiet(transformers):
            return transformers.AutoModel.from_config(config)

    return build


def _sub_config(config: Any, name: str) -> Any:
    """A multimodal configuration's text or vision part, else the configuration itself."""
    return getattr(config, f"{name}_config", None) or config


def hf_inputs(model_type: str) -> list[InputSpec]:
    """The default inputs of the type's model, by the names its ``forward`` takes, as
    keywords: ``input_ids`` of 1×128 tokens (fewer if the model has fewer positions), and
    ``decoder_input_ids`` for an encoder-decoder; ``pixel_values`` of one image at the
    configuration's ``image_size``; ``input_values`` of one second of 16 kHz audio;
    ``input_features`` of the spectrogram frames the model takes (Whisper: 80×3000).

    ``attention_mask`` is not given: transformers reads a mask's values to decide whether to
    build one at all (a mask of ones is skipped), which the meta device cannot do, and a
    missing mask means "attend to every token", the count of a mask of ones. Give one, with
    the token ids (given inputs replace these), by ``--input input_ids=1x128:int64 --input
    attention_mask=1x128:int64`` on a real device (masks are ones there).

    Raises:
        ZooError: the forward takes none of those inputs: the user must say them.
    """
    config = hf_config(model_type)
    takes = inspect.signature(_model_class(config).forward).parameters
    text, vision = _sub_config(config, "text"), _sub_config(config, "vision")
    positions = getattr(text, "max_position_embeddings", None) or TEXT_LENGTH
    length = min(TEXT_LENGTH, positions)
    specs: list[InputSpec] = []
    if "input_ids" in takes:
        specs.append(InputSpec((1, length), "int64", "input_ids"))
    if "pixel_values" in takes:
        size = _image_size(vision)
        channels = getattr(vision, "num_channels", 3)
        specs.append(InputSpec((1, channels, size, size), "float32", "pixel_values"))
    if "input_values" in takes and not specs:
        specs.append(InputSpec((1, AUDIO_SAMPLES), "float32", "input_values"))
    if "input_features" in takes and not specs and hasattr(config, "num_mel_bins"):
        frames = 2 * getattr(config, "max_source_positions", 1500)
        specs.append(InputSpec((1, config.num_mel_bins, frames), "float32", "input_features"))
    if not specs:
        names = ", ".join(name for name in takes if name not in ("self", "kwargs"))
        raise ZooError(
            f"hf:{model_type} has no default input (its forward takes {names}): give them "
            "with --input NAME=SIZES[:DTYPE]"
        )
    if "decoder_input_ids" in takes and getattr(config, "is_encoder_decoder", False):
        specs.append(InputSpec((1, length), "int64", "decoder_input_ids"))
    return specs
