"""Search spaces (parsing, log-aware geometry, narrowing) and the selection rules (diverse top-k, seed summary)."""

from __future__ import annotations

import math

import optuna
import pytest

from polsess_hf.hpo.selection import Candidate, diverse_top_k, summarise_validation
from polsess_hf.hpo.space import ParamSpec, SearchSpace, distance, union_bounds

SPACE = {
    "learning_rate": {"type": "loguniform", "low": 1e-5, "high": 1e-2},
    "max_grad_norm": {"type": "uniform", "low": 0.0, "high": 10.0},
    "lr_patience": {"type": "int", "low": 1, "high": 5},
    "model.rnn_type": ["LSTM", "GRU"],
}


def test_parse_round_trip_and_optuna_distributions():
    space = SearchSpace.from_config(SPACE)
    assert space.names == list(SPACE)
    assert SearchSpace.from_config(space.to_config()).to_config() == space.to_config()
    lr = space["learning_rate"]
    assert (lr.kind, lr.log, lr.low, lr.high) == ("float", True, 1e-5, 1e-2)
    assert space["lr_patience"].distribution() == optuna.distributions.IntDistribution(1, 5)
    assert space["model.rnn_type"].distribution() == optuna.distributions.CategoricalDistribution(["LSTM", "GRU"])
    # YAML reads "1e-5" (no dot) as a string: accepted as a number.
    assert ParamSpec.from_config("wd", {"type": "float", "low": "1e-7", "high": "1e-3", "log": True}).low == 1e-7


@pytest.mark.parametrize(
    "value, message",
    [
        ({"type": "float", "low": 1.0}, "high must be a number, got None"),
        ({"type": "loguniform", "low": 0.0, "high": 1.0}, "needs low > 0"),
        ({"type": "float", "low": 2.0, "high": 1.0}, "low ≤ high"),
        ({"type": "normal", "low": 0, "high": 1}, "type must be one of"),
        ({"type": "float", "low": 0, "high": 1, "lo": 0}, "unknown key(s) ['lo']"),
        ({"type": "int", "low": 0.5, "high": 3}, "integer bounds"),
        ({"type": "categorical", "choices": []}, "non-empty list"),
        ({"type": "uniform", "low": 1e-3, "high": 1.0, "log": True}, "use loguniform"),
    ],
)
def test_bad_parameter_specs_name_the_parameter(value, message):
    with pytest.raises(ValueError) as error:
        ParamSpec.from_config("learning_rate", value, "stages[0].space")
    assert "stages[0].space.learning_rate" in str(error.value) and message in str(error.value)


def test_normalised_geometry_is_log_aware():
    space = SearchSpace.from_config(SPACE)
    specs = list(space)
    base = {"learning_rate": 1e-4, "max_grad_norm": 5.0, "lr_patience": 3, "model.rnn_type": "LSTM"}
    assert space["learning_rate"].normalise(1e-5) == 0 and space["learning_rate"].normalise(1e-2) == pytest.approx(1)
    # One decade of a three-decade log range is a third, whatever the absolute values.
    assert space["learning_rate"].normalise(1e-3) - space["learning_rate"].normalise(1e-4) == pytest.approx(1 / 3)
    one_decade = distance(base, {**base, "learning_rate": 1e-3}, specs)
    assert one_decade == pytest.approx(math.sqrt((1 / 3) ** 2 / 4))  # RMS over the 4 parameters
    # A different category counts as a full range apart.
    assert distance(base, {**base, "model.rnn_type": "GRU"}, specs) == pytest.approx(math.sqrt(1 / 4))
    assert distance(base, base, specs) == 0


def test_narrow_takes_min_max_with_log_padding_and_clips_to_the_previous_range():
    space = SearchSpace.from_config(SPACE)
    top = [
        {"learning_rate": 1e-3, "max_grad_norm": 9.5, "lr_patience": 2, "model.rnn_type": "LSTM"},
        {"learning_rate": 2e-3, "max_grad_norm": 3.0, "lr_patience": 3, "model.rnn_type": "LSTM"},
    ]
    narrowed = space.narrow(top, padding=0.1)
    lr = narrowed["learning_rate"]
    pad = 0.1 * math.log(1e-2 / 1e-5)  # a tenth of the previous width, in log space
    assert lr.log and lr.low == pytest.approx(1e-3 * math.exp(-pad), rel=1e-2)   # 5.01e-4 (3 significant digits)
    assert lr.high == pytest.approx(2e-3 * math.exp(pad), rel=1e-2)             # 3.99e-3
    assert lr.low <= 1e-3 * math.exp(-pad) and lr.high >= 2e-3 * math.exp(pad)  # rounded outward
    clip = narrowed["max_grad_norm"]
    assert clip.low == pytest.approx(2.0) and clip.high == 10.0  # 9.5 + 1.0 clipped to the previous high
    assert (narrowed["lr_patience"].low, narrowed["lr_patience"].high) == (1, 4)  # 2 - 0.4 → 1, 3 + 0.4 → 4
    assert narrowed["model.rnn_type"].choices == ("LSTM",)
    for spec in narrowed:  # never outside the previous stage's range
        previous = space[spec.name]
        if spec.kind != "categorical":
            assert previous.low <= spec.low <= spec.high <= previous.high


def test_union_bounds_spans_pooled_stages():
    a = SearchSpace.from_config({"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-3}, "c": ["x"]})
    b = SearchSpace.from_config({"lr": {"type": "loguniform", "low": 5e-4, "high": 2e-3}, "c": ["y", "x"]})
    lr, c = union_bounds([a, b])
    assert (lr.low, lr.high, lr.log) == (1e-4, 2e-3, True) and c.choices == ("x", "y")
    with pytest.raises(ValueError, match="same parameters"):
        union_bounds([a, SearchSpace.from_config({"lr": {"type": "float", "low": 0, "high": 1}})])


def _candidates():
    return [
        Candidate("best", 4.08, {"learning_rate": 1.25e-3, "max_grad_norm": 2.76}),
        # Same region as "best" (lr 4 % higher, clip 0.04 apart): a near-duplicate.
        Candidate("twin", 4.05, {"learning_rate": 1.30e-3, "max_grad_norm": 2.80}),
        Candidate("far", 3.78, {"learning_rate": 1.14e-3, "max_grad_norm": 9.86}),
        Candidate("other", 3.70, {"learning_rate": 4.0e-4, "max_grad_norm": 2.5}),
    ]


def test_diverse_top_k_excludes_a_near_duplicate():
    specs = list(SearchSpace.from_config({"learning_rate": SPACE["learning_rate"], "max_grad_norm": SPACE["max_grad_norm"]}))
    plain = diverse_top_k(_candidates(), specs, k=3, min_distance=0.0)
    assert [c.key for c in plain.chosen] == ["best", "twin", "far"]  # min_distance 0 = top-k by score
    diverse = diverse_top_k(_candidates(), specs, k=3, min_distance=0.1)
    assert [c.key for c in diverse.chosen] == ["best", "far", "other"]
    (skipped, nearest, gap), = diverse.skipped
    assert skipped.key == "twin" and nearest == "best" and gap < 0.1
    assert diverse.distances[0] is None and all(d >= 0.1 for d in diverse.distances[1:])
    assert diverse.distances[1] == pytest.approx(distance(_candidates()[2].params, _candidates()[0].params, specs))


def test_diverse_top_k_max_rank_and_shortfall_warning():
    specs = list(SearchSpace.from_config({"learning_rate": SPACE["learning_rate"], "max_grad_norm": SPACE["max_grad_norm"]}))
    with pytest.warns(UserWarning, match="chose 1 of k=3"):
        result = diverse_top_k(_candidates(), specs, k=3, min_distance=0.1, max_rank=2)
    assert [c.key for c in result.chosen] == ["best"]
    nan = Candidate("nan", float("nan"), {"learning_rate": 1e-3, "max_grad_norm": 1.0})
    assert "nan" not in [c.key for c in diverse_top_k([nan, *_candidates()], specs, k=4, min_distance=0).chosen]
    with pytest.raises(ValueError, match="min_distance"):
        diverse_top_k(_candidates(), specs, k=2, min_distance=1.5)


def test_summarise_validation_reproduces_the_thesis_numbers():
    # Seed log, final validation: fancy-sweep-62 4.65/4.62/4.75 → 4.67 ± 0.07; rose-sweep-41 4.21/4.31/4.34 → 4.29 ± 0.07.
    summary = summarise_validation({
        "rose-sweep-41": {42: 4.21, 123: 4.31, 456: 4.34},
        "fancy-sweep-62": {42: 4.65, 123: 4.62, 456: 4.75},
        "diverged": {42: 5.0, 123: float("nan")},
    })
    winner = summary.winner
    assert winner["key"] == "fancy-sweep-62" and winner["seeds"] == [42, 123, 456]
    assert round(winner["mean"], 2) == 4.67 and round(winner["std"], 2) == 0.07
    assert [r["key"] for r in summary.rows] == ["fancy-sweep-62", "rose-sweep-41", "diverged"]
    assert round(summary.rows[1]["mean"], 2) == 4.29 and round(summary.rows[1]["std"], 2) == 0.07
