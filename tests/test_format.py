"""Numbers, shapes and titles as short text."""

from __future__ import annotations

import pytest

from opscope.format import format_count, format_published, format_tick, models_title, plural


@pytest.mark.parametrize(
    ("value", "text"),
    [(0, "0"), (999, "999"), (1000, "1.00 K"), (3_624_638_976, "3.62 G"), (11_689_512, "11.7 M"),
     (999_999, "1.00 M"), (123_456_789_012_345, "123 T")],
)  # fmt: skip
def test_format_count(value: int, text: str) -> None:
    assert format_count(value) == text



@pytest.mark.parametrize(
    ("value", "text"), [(0, "0"), (250e6, "250 M"), (1e9, "1 G"), (2.5e3, "2.5 K"), (7, "7")]
)
def test_axis_ticks_share_the_scaling_of_counts(value: float, text: str) -> None:
    assert format_tick(value) == text


def test_published_figures_name_another_size() -> None:
    assert format_published(37.75, 600, (1, 3, 224, 224)) == "37.75 @600"
    assert format_published(4.089, 224, (1, 3, 224, 224)) == "4.09"
    assert format_published(None, 224, (1, 3, 224, 224)) == ""
    assert format_published(1.5, None, (1, 3, 224, 224)) == "1.50"


def test_titles_and_plurals() -> None:
    assert models_title(2, [(1, 3, 224, 224), (1, 3, 224, 224)]) == "2 models at 1×3×224×224"
    assert models_title(2, [(1, 3, 224, 224), (1, 3, 299, 299)]) == "2 models"
    assert models_title(1, [(1, 2)]) == "1 model at 1×2"
    assert (plural(0, "call"), plural(1, "call")) == ("0 calls", "1 call")
