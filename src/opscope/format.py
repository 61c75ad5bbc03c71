"""Numbers, shapes and durations as short text, for every view (terminal, documents, plots).

Plain functions of plain values: this module knows nothing of reports, rich or matplotlib.
"""

from __future__ import annotations

from collections.abc import Iterable

SI_PREFIXES = ("", "K", "M", "G", "T", "P", "E")


def scale_si(value: float) -> tuple[float, str]:
    """``value`` divided by powers of 1000 until it is below 999.5, and the SI prefix that says
    by how much.

    Example:
        >>> scale_si(3_628_147_712)
        (3.628147712, 'G')
    """
    scaled, prefix = float(value), 0
    while abs(scaled) >= 999.5 and prefix < len(SI_PREFIXES) - 1:
        scaled, prefix = scaled / 1000, prefix + 1
    return scaled, SI_PREFIXES[prefix]


def format_count(value: int) -> str:
    """A count with three significant digits and an SI prefix.

    Example:
        >>> format_count(3_628_147_712), format_count(11_689_512), format_count(999)
        ('3.63 G', '11.7 M', '999')
    """
    scaled, prefix = scale_si(value)
    if not prefix:
        return str(value)
    digits = 2 if abs(scaled) < 9.995 else 1 if abs(scaled) < 99.95 else 0
    return f"{scaled:.{digits}f} {prefix}"


def format_tick(value: float) -> str:
    """An axis tick: at most three significant digits, no trailing zeros.

    Example:
        >>> format_tick(250e6), format_tick(1e9), format_tick(0)
        ('250 M', '1 G', '0')
    """
    if value == 0:
        return "0"
    scaled, prefix = scale_si(value)
    return f"{scaled:.3g} {prefix}".strip()


def format_time(nanoseconds: int) -> str:
    """A duration with three significant digits: ``1.23 ms``, ``45.6 µs``."""
    for unit, scale in (("s", 10**9), ("ms", 10**6), ("µs", 10**3)):
        if nanoseconds >= scale:
            value = nanoseconds / scale
            return f"{value:.{2 if value < 10 else 1 if value < 100 else 0}f} {unit}"
    return f"{nanoseconds} ns"


_EIGHTHS = " ▏▎▍▌▋▊▉"


def share_bar(fraction: float, width: int = 10) -> str:
    """``fraction`` (0 to 1) as a bar of ``width`` characters, to an eighth of a character.

    Example:
        >>> share_bar(0.5, width=4), share_bar(0.0625, width=4)
        ('██', '▎')
    """
    eighths = round(max(0.0, min(1.0, fraction)) * width * 8)
    return "█" * (eighths // 8) + _EIGHTHS[eighths % 8].strip()


def format_shape(shape: Iterable[int]) -> str:
    """``(1, 64, 56, 56)`` as ``1×64×56×56``."""
    return "×".join(map(str, shape))


def format_share(part: int, total: int) -> str:
    """``part`` as a percentage of ``total`` with one decimal."""
    return f"{100 * part / total:.1f}%" if total else "-"


def keep_indent(text: str, space: str) -> str:
    """``text`` with each leading space written as ``space``: a format that trims or
    collapses spaces in table cells (markdown, HTML, LaTeX) keeps a tree's indentation.

    Example:
        >>> keep_indent("    conv1", "~"), keep_indent("a b", "~")
        ('~~~~conv1', 'a b')
    """
    body = text.lstrip(" ")
    return space * (len(text) - len(body)) + body


def plural(count: int, noun: str) -> str:
    """``1 model``, ``2 models``.

    Example:
        >>> plural(1, "call"), plural(3, "call")
        ('1 call', '3 calls')
    """
    return f"{count} {noun}{'' if count == 1 else 's'}"


def published_elsewhere(published_size: int | None, input_shape: tuple[int, ...]) -> bool:
    """Whether a published figure was measured at another input size than this run's (the
    last size of the input): then it is shown with ``@size``."""
    return published_size is not None and bool(input_shape) and published_size != input_shape[-1]


def format_published(
    value: float | None, published_size: int | None, input_shape: tuple[int, ...]
) -> str:
    """A published figure with two decimals, ``@size`` when measured at another size.

    Example:
        >>> format_published(37.75, 600, (1, 3, 224, 224)), format_published(4.09, 224, (1, 3, 224, 224))
        ('37.75 @600', '4.09')
    """
    if value is None:
        return ""
    at_size = f" @{published_size}" if published_elsewhere(published_size, input_shape) else ""
    return f"{value:.2f}{at_size}"


def at_common_shape(shapes: Iterable[tuple[int, ...]]) -> str:
    """``" at 1×3×224×224"`` when every shape is that one (but the empty shapes of models
    that failed before running), else ``""``."""
    distinct = set(shapes) - {()}  # a model that failed before running has none
    return f" at {format_shape(distinct.pop())}" if len(distinct) == 1 else ""


def models_title(count: int, shapes: Iterable[tuple[int, ...]]) -> str:
    """``"3 models at 1×3×224×224"``, or ``"3 models"`` when their inputs differ."""
    return plural(count, "model") + at_common_shape(shapes)
