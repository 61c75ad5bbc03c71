"""The names opscope knows: torchvision's models and users' factories, found without
importing torch or torchvision, so that the command line answers ``--help``, ``list`` and an
unknown name at once.

torchvision registers each builder with a ``@register_model()`` decorator; reading those
decorators from its source files (with :mod:`ast`, never importing them) gives the same names
and tasks as ``torchvision.models.list_models`` (a test checks it).
"""

from __future__ import annotations

import ast
import difflib
import fnmatch
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

TASKS = ("classification", "detection", "segmentation", "video", "optical_flow", "quantization")
"""torchvision's model families, each a sub-package of ``torchvision.models`` (classification
being the package itself)."""
CUSTOM = "custom"
"""The task of a user's own factory."""
_GLOB_CHARACTERS = "*?["


class ZooError(Exception):
    """A model name that cannot be resolved or built; its message is meant for the user."""


@dataclass(frozen=True)
class ZooModel:
    """A model opscope can build by name.

    Attributes:
        name: the torchvision name (``"resnet50"``) or ``"package.module:callable"``.
        task: one of :data:`TASKS`, or :data:`CUSTOM` for a user's factory.
    """

    name: str
    task: str


def _registered_names(source: str) -> list[str]:
    """The names ``@register_model()`` gives the builders of one torchvision source file."""
    names = []
    for node in ast.walk(ast.parse(source)):
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


@cache
def catalogue() -> dict[str, str]:
    """Every torchvision model name and its task, sorted by name (empty without torchvision)."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return {}
    models = Path(next(iter(spec.submodule_search_locations))) / "models"
    names: dict[str, str] = {}
    for task in TASKS:
        folder = models if task == "classification" else models / task
        for path in sorted(folder.glob("*.py")):
            source = path.read_text(encoding="utf-8")
            if "register_model" in source:
                for name in _registered_names(source):
                    names.setdefault(name, task)
    return dict(sorted(names.items()))


def _is_glob(pattern: str) -> bool:
    return any(char in pattern for char in _GLOB_CHARACTERS)


def list_models(pattern: str | None = None, task: str | None = None) -> list[ZooModel]:
    """torchvision's models by name, optionally filtered by a task and a pattern: a glob
    (``'efficientnet_b?'``), or else a piece of the name, in any case (``'ResNet'``).

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
        ZooModel(name, model_task)
        for name, model_task in catalogue().items()
        if matches(name) and (task is None or model_task == task)
    ]


def is_factory_path(name: str) -> bool:
    """``package.module:callable`` names a user's own model factory."""
    return ":" in name


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
    """
    resolved: dict[str, ZooModel] = {}
    for pattern in patterns:
        if is_factory_path(pattern):
            check_factory_path(pattern)
            resolved.setdefault(pattern, ZooModel(pattern, CUSTOM))
            continue
        matches = (
            list_models(pattern)
            if _is_glob(pattern)
            else [ZooModel(pattern, task)]
            if (task := catalogue().get(pattern))
            else []
        )
        if not matches:
            raise ZooError(unknown_message(pattern))
        for model in matches:
            resolved.setdefault(model.name, model)
    return list(resolved.values())


def suggestions(name: str, limit: int = 5) -> list[str]:
    """The known names closest to ``name``: the same name in another case, names that
    contain it (those that start with it first), then names that look like it.

    Example:
        >>> suggestions("RESNET50"), suggestions("resnet19")[:1]
        (['resnet50'], ['resnet18'])
    """
    names = list(catalogue())
    same = [known for known in names if known.lower() == name.lower()]
    if same:
        return same
    containing = [known for known in names if name.lower() in known.lower()]
    if containing:  # those that start with it first: 'vit' means vit_b_16 before maxvit_t
        containing.sort(key=lambda known: not known.lower().startswith(name.lower()))
        return containing[:limit]
    return difflib.get_close_matches(name.lower(), names, n=3, cutoff=0.6)


def unknown_message(pattern: str) -> str:
    """Why ``pattern`` names no model, and what the user may have meant."""
    if _is_glob(pattern):
        return f"no model matches {pattern!r} (see 'opscope list')"
    close = suggestions(pattern)
    hint = f"; did you mean {', '.join(close)}?" if close else " (see 'opscope list')"
    return f"unknown model {pattern!r}{hint}"
