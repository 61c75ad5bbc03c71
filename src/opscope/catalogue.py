"""The names opscope knows: torchvision's models, timm's (``timm:convnext_tiny``), Hugging Face
transformers' model types (``hf:bert``) and users' factories, found without importing torch
or those libraries, so that the command line answers ``--help``, ``list`` and an unknown name
at once.

Each library's names are read from its source files, never imported, and equal its own list
(tests check each):

* torchvision registers each builder with a ``@register_model()`` decorator, read with
  :mod:`ast`: the same names and tasks as ``torchvision.models.list_models``.
* timm registers each architecture with a bare ``@register_model`` line above its ``def``,
  found with a regular expression (parsing timm's hundred files with :mod:`ast` takes
  seconds, the expression a tenth of one): the same names as ``timm.list_models()``.
* transformers' ``AutoModel`` builds the model types of ``MODEL_MAPPING_NAMES``, a literal in
  ``transformers/models/auto/modeling_auto.py``, read with :mod:`ast`; the other mappings of
  that file (masked LM, image classification, speech, ...) say each type's task.

timm and transformers are optional extras: naming one of their models without it installed
raises :class:`MissingExtra`, which says what to install.
"""

from __future__ import annotations

import ast
import difflib
import fnmatch
import importlib.metadata
import importlib.util
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

TASKS = ("classification", "detection", "segmentation", "video", "optical_flow", "quantization")
"""torchvision's model families, each a sub-package of ``torchvision.models`` (classification
being the package itself)."""
CUSTOM = "custom"
"""The task, and the source, of a user's own factory."""
TORCHVISION = "torchvision"
SOURCES = (TORCHVISION, "timm", "hf")
"""Where named models come from; a name other than torchvision's carries its source as a
prefix: ``timm:resnet50``, ``hf:bert``."""
EXTRAS = {"timm": ("timm", "timm"), "hf": ("transformers", "hf")}
"""Each optional source's package, and the opscope extra that installs it."""
TIMM_TASK = "classification"
"""The task of every timm model: an image classifier (the head timm builds by default)."""
HF_TASKS = {
    "audio": ("CTC", "AUDIO_CLASSIFICATION", "SPEECH_SEQ_2_SEQ", "AUDIO_XVECTOR",
              "AUDIO_FRAME_CLASSIFICATION"),
    "multimodal": ("IMAGE_TEXT_TO_TEXT", "ZERO_SHOT_IMAGE_CLASSIFICATION",
                   "VISUAL_QUESTION_ANSWERING", "DOCUMENT_QUESTION_ANSWERING",
                   "ZERO_SHOT_OBJECT_DETECTION"),
    "vision": ("IMAGE", "IMAGE_CLASSIFICATION", "OBJECT_DETECTION", "SEMANTIC_SEGMENTATION",
               "UNIVERSAL_SEGMENTATION", "DEPTH_ESTIMATION", "VIDEO_CLASSIFICATION", "BACKBONE"),
    "seq2seq": ("SEQ_TO_SEQ_CAUSAL_LM",),
    "text": ("CAUSAL_LM", "MASKED_LM", "SEQUENCE_CLASSIFICATION", "TOKEN_CLASSIFICATION",
             "QUESTION_ANSWERING", "TEXT_ENCODING", "PRETRAINING"),
}  # fmt: skip
"""A transformers model type's task, by the first ``MODEL_FOR_<KIND>_MAPPING_NAMES`` of
``modeling_auto.py`` that holds it (in this order); a type in none of them is ``other``."""
HF_OTHER = "other"
LISTED_TASKS = (*TASKS, *HF_TASKS, HF_OTHER)
"""Every task ``opscope list --task`` can filter by, over all sources."""
_GLOB_CHARACTERS = "*?["
# timm's registrations: '@register_model' alone on its line, other decorators, then the def.
_TIMM_REGISTERED = re.compile(r"^@register_model\b[^\n]*\n(?:@[^\n]*\n)*def\s+(\w+)", re.MULTILINE)


class ZooError(Exception):
    """A model name that cannot be resolved or built; its message is meant for the user."""


class MissingExtra(ZooError):
    """A model of an optional source whose library is not installed; the message says which
    extra installs it (the command line exits with 1, not 2: the name may be right)."""


@dataclass(frozen=True)
class ZooModel:
    """A model opscope can build by name.

    Attributes:
        name: the torchvision name (``"resnet50"``), a timm or transformers name with its
            source (``"timm:resnet50"``, ``"hf:bert"``), or ``"package.module:callable"``.
        task: one of :data:`TASKS` (timm's models: ``classification``), a transformers
            model type's task (:data:`HF_TASKS`, or ``other``), or :data:`CUSTOM` for a
            user's factory.
    """

    name: str
    task: str

    @property
    def source(self) -> str:
        """One of :data:`SOURCES`, or :data:`CUSTOM` for a user's factory."""
        return source_of(self.name)

    @property
    def architecture(self) -> str:
        """The name in its own library, without the source (``"resnet50"``)."""
        return split_source(self.name)[1]


def split_source(name: str) -> tuple[str, str]:
    """The source a name comes from, and the name in that source.

    Example:
        >>> split_source("timm:resnet50"), split_source("resnet50"), split_source("my.models:net")
        (('timm', 'resnet50'), ('torchvision', 'resnet50'), ('custom', 'my.models:net'))
    """
    prefix, colon, rest = name.partition(":")
    if colon and prefix in EXTRAS:
        return prefix, rest
    return (CUSTOM, name) if colon else (TORCHVISION, name)


def source_of(name: str) -> str:
    """The source of a model name: :data:`TORCHVISION`, ``timm``, ``hf`` or :data:`CUSTOM`."""
    return split_source(name)[0]


def qualified(source: str, name: str) -> str:
    """``name`` as opscope writes it: with its source unless it is torchvision's."""
    return name if source in (TORCHVISION, CUSTOM) else f"{source}:{name}"


def _registered_names(source: str) -> list[str]:
    """The names ``@register_model()`` gives the builders of one torchvision source file: its
    top-level functions (walking every node of the 39 files took 0.2 s of every command)."""
    names = []
    for node in ast.parse(source).body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for decorator in node.decorator_list:
            function = decorator.func if isinstance(decorator, ast.Call) else None
            called = getattr(function, "id", None) or getattr(function, "attr", None)
            if called != "register_model":
                continue
            assert isinstance(decorator, ast.Call)
            given = [k.value for k in decorator.keywords if k.arg == "name"]
            named = given[0].value if given and isinstance(given[0], ast.Constant) else None
            names.append(str(named or node.name))
    return names


def _package_folder(package: str) -> Path | None:
    """Where an installed package's files are, without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def missing_extra(source: str) -> str:
    """What to install for ``source``'s models."""
    package, extra = EXTRAS[source]
    return f"{source}: models need {package}: pip install 'opscope[{extra}]'"


def require(source: str) -> Path:
    """The folder of ``source``'s installed package.

    Raises:
        MissingExtra: it is not installed.
    """
    folder = _package_folder(EXTRAS[source][0])
    if folder is None:
        raise MissingExtra(missing_extra(source))
    return folder


def library(source: str) -> str:
    """The package ``source``'s models come from, and its installed version if it has one:
    ``torchvision 0.29.1``, ``transformers 5.24.0``."""
    package = TORCHVISION if source == TORCHVISION else EXTRAS[source][0]
    try:
        return f"{package} {importlib.metadata.version(package)}"
    except importlib.metadata.PackageNotFoundError:
        return package


@cache
def catalogue(source: str = TORCHVISION) -> dict[str, str]:
    """Every model name of ``source`` (without its prefix) and its task, sorted by name.

    Empty without torchvision, for torchvision.

    Raises:
        MissingExtra: ``timm`` or ``hf`` without its library.
        ValueError: an unknown source.
    """
    if source == "timm":
        return _timm_catalogue(require(source))
    if source == "hf":
        return _hf_catalogue(require(source))
    if source != TORCHVISION:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}; got {source!r}")
    folder = _package_folder(TORCHVISION)
    if folder is None:
        return {}
    models = folder / "models"
    names: dict[str, str] = {}
    for task in TASKS:
        folder = models if task == "classification" else models / task
        for path in sorted(folder.glob("*.py")):
            text = path.read_text(encoding="utf-8")
            if "register_model" in text:
                for name in _registered_names(text):
                    names.setdefault(name, task)
    return dict(sorted(names.items()))


def _timm_catalogue(package: Path) -> dict[str, str]:
    """timm's architectures (``timm.list_models()``), all image classifiers."""
    names: set[str] = set()
    for path in sorted((package / "models").rglob("*.py")):
        names.update(_TIMM_REGISTERED.findall(path.read_text(encoding="utf-8")))
    return dict.fromkeys(sorted(names), TIMM_TASK)


def _literal_mappings(path: Path) -> dict[str, dict[str, object]]:
    """The ``NAME = OrderedDict([...])`` literals of a transformers auto-mapping file."""
    found: dict[str, dict[str, object]] = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)):
            continue
        target = node.targets[0]
        if len(node.targets) != 1 or not isinstance(target, ast.Name) or not node.value.args:
            continue
        try:
            found[target.id] = dict(ast.literal_eval(node.value.args[0]))
        except (ValueError, TypeError):  # built from other mappings: not a literal
            continue
    return found


def _hf_catalogue(package: Path) -> dict[str, str]:
    """The model types ``AutoModel.from_config`` builds, and each one's task."""
    mappings = _literal_mappings(package / "models" / "auto" / "modeling_auto.py")

    def task(model_type: str) -> str:
        for name, kinds in HF_TASKS.items():
            if any(model_type in mappings.get(f"MODEL_FOR_{k}_MAPPING_NAMES", {}) for k in kinds):
                return name
        return HF_OTHER

    return {model_type: task(model_type) for model_type in sorted(mappings["MODEL_MAPPING_NAMES"])}


def _is_glob(pattern: str) -> bool:
    return any(char in pattern for char in _GLOB_CHARACTERS)


def list_models(
    pattern: str | None = None, task: str | None = None, source: str = TORCHVISION
) -> list[ZooModel]:
    """The models of ``source`` (torchvision's by default) by name, optionally filtered by a
    task and a pattern: a glob (``'efficientnet_b?'``), or else a piece of the name, in any
    case (``'ResNet'``). The pattern is matched against names without their source; the
    models' names carry it (``timm:resnet18``).

    Raises:
        MissingExtra: ``timm`` or ``hf`` without its library.

    Example:
        >>> [m.name for m in list_models("resnet1*")]
        ['resnet101', 'resnet152', 'resnet18']
        >>> [m.name for m in list_models("ResNeXt", task="classification")]
        ['resnext101_32x8d', 'resnext101_64x4d', 'resnext50_32x4d']
    """

    def matches(name: str) -> bool:
        if pattern is None:
            return True
        if _is_glob(pattern):
            return fnmatch.fnmatchcase(name, pattern)
        return pattern.lower() in name.lower()

    return [
        ZooModel(qualified(source, name), model_task)
        for name, model_task in catalogue(source).items()
        if matches(name) and (task is None or model_task == task)
    ]


def is_factory_path(name: str) -> bool:
    """``package.module:callable`` names a user's own model factory (``timm:`` and ``hf:``
    name models of those libraries)."""
    return source_of(name) == CUSTOM


def check_factory_path(name: str) -> None:
    """Refuse a ``package.module:callable`` name that cannot be imported as written (``':'``,
    ``'.relative:f'``, ``'a..b:f'``, ``'os:'``).

    Raises:
        ZooError: the name is malformed.
    """
    module_path, _, attribute = name.partition(":")
    if not attribute or not all(module_path.split(".")):
        raise ZooError(f"invalid model {name!r}: expected package.module:callable")


def resolve(patterns: Sequence[str]) -> list[ZooModel]:
    """Expand names and globs (``'resnet*'``, ``'efficientnet_b?'``) into models, in the order
    given, each once.

    Raises:
        ZooError: a name that is not known, with the closest known names; a glob that
            matches nothing; a malformed factory path.
        MissingExtra: a ``timm:`` or ``hf:`` name without that library.
    """
    resolved: dict[str, ZooModel] = {}
    for pattern in patterns:
        source, name = split_source(pattern)
        if source == CUSTOM:
            check_factory_path(pattern)
            resolved.setdefault(pattern, ZooModel(pattern, CUSTOM))
            continue
        matches = (
            list_models(name, source=source)
            if _is_glob(name)
            else [ZooModel(pattern, task)]
            if (task := catalogue(source).get(name))
            else []
        )
        if not matches:
            raise ZooError(unknown_message(pattern))
        for model in matches:
            resolved.setdefault(model.name, model)
    return list(resolved.values())


def suggestions(name: str, limit: int = 5) -> list[str]:
    """The known names of ``name``'s source closest to it: the same name in another case,
    names that contain it (those that start with it first), then names that look like it.

    Example:
        >>> suggestions("RESNET50"), suggestions("resnet19")[:1]
        (['resnet50'], ['resnet18'])
    """
    source, name = split_source(name)
    names = list(catalogue(source)) if source != CUSTOM else []
    same = [known for known in names if known.lower() == name.lower()]
    containing = [known for known in names if name.lower() in known.lower()]
    # those that start with it first: 'vit' means vit_b_16 before maxvit_t
    containing.sort(key=lambda known: not known.lower().startswith(name.lower()))
    close = same or containing[:limit] or difflib.get_close_matches(name.lower(), names, n=3)
    return [qualified(source, known) for known in close]


def unknown_message(pattern: str) -> str:
    """Why ``pattern`` names no model, and what the user may have meant."""
    source = source_of(pattern)
    listing = (
        "'opscope list'" if source in (TORCHVISION, CUSTOM) else f"'opscope list --source {source}'"
    )
    if _is_glob(pattern):
        return f"no model matches {pattern!r} (see {listing})"
    close = suggestions(pattern)
    hint = f"; did you mean {', '.join(close)}?" if close else f" (see {listing})"
    return f"unknown model {pattern!r}{hint}"
