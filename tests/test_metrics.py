"""Label-set metrics on hand-made predictions."""

import pytest

from lfkit.evaluation.metrics import category, labels, score, summarize


def test_exact_match_ignores_label_order_and_whitespace():
    s = score("  开通方式_98 | 业务简介_111|9.9 ", "业务简介_111|9.9|开通方式_98")
    assert (s.exact, s.precision, s.recall, s.f1) == (True, 1.0, 1.0, 1.0)


def test_a_partial_answer_earns_partial_credit():
    s = score("业务简介_111|开通方式_98", "业务简介_111|9.9|开通方式_98")
    assert not s.exact
    assert s.precision == 1.0 and s.recall == pytest.approx(2 / 3) and s.f1 == pytest.approx(0.8)
    wrong_extra = score("业务简介_111|取消方式_5", "业务简介_111")
    assert (wrong_extra.precision, wrong_extra.recall) == (0.5, 1.0)


@pytest.mark.parametrize("prediction", ["", "   ", None, "|"])
def test_an_empty_answer_earns_nothing(prediction):
    s = score(prediction, "取消方式_68")
    assert (s.exact, s.precision, s.recall, s.f1) == (False, 0.0, 0.0, 0.0)


def test_inner_whitespace_inside_a_label_is_normalised_not_removed():
    assert labels("业务  简介_1 |  x") == {"业务 简介_1", "x"}
    assert not score("取消方式 _68", "取消方式_68").exact


def test_summary_averages_and_counts_per_category():
    pairs = [
        ("取消方式_68", "取消方式_68", None),
        ("开通方式_68", "取消方式_69", None),
        ("业务简介_1|5", "业务简介_1|5|开通方式_1", None),
        ("", "开通方式_2", "custom"),
    ]
    result = summarize(pairs)
    assert result["samples"] == 4
    assert result["exact_match"] == 0.25
    assert result["recall"] == pytest.approx((1 + 0 + 2 / 3 + 0) / 4, abs=1e-4)
    assert result["per_category"] == {
        "取消方式": {"accuracy": 0.5, "samples": 2},
        "业务简介": {"accuracy": 0.0, "samples": 1},
        "custom": {"accuracy": 0.0, "samples": 1},
    }
    assert category("业务简介_111|9.9|开通方式_98") == "业务简介"
