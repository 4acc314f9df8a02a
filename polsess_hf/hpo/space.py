"""Search spaces: typed hyperparameter ranges, their Optuna distributions, a normalised geometry and narrowing.

A parameter is written in a study YAML as one of::

    learning_rate: {type: float, low: 1.0e-5, high: 1.0e-2, log: true}   # log-uniform (also type: loguniform)
    max_grad_norm: {type: float, low: 0.1, high: 15.0}                   # uniform (also type: uniform)
    lr_patience:   {type: int, low: 2, high: 6}                          # integers (step, log optional)
    rnn_type:      {type: categorical, choices: [LSTM, GRU]}             # or a bare list: [LSTM, GRU]

Names are training/data keys (``learning_rate``, ``weight_decay``, ``max_grad_norm``, ``lr_factor``,
``lr_patience``, ``per_device_train_batch_size``, ...) or ``model.<field>`` for a field of the model config
(``model.dropout``, ``model.chunk_size``).

**Normalised geometry** (used by narrowing and by the diverse top-k selection): a numeric value maps to
``(t(x) − t(low)) / (t(high) − t(low))`` in [0, 1], with ``t = log`` for log-distributed parameters and the
identity otherwise, so a decade of learning rate weighs as much as any other tenth of a range. A categorical
parameter contributes 0 (same choice) or 1 (different choice). :func:`distance` is the root-mean-square of the
per-parameter differences, so it lies in [0, 1] whatever the number of parameters.

**Narrowing** (:meth:`SearchSpace.narrow`): keep the top ``top_quantile`` of the previous stage's completed
trials (at least ``min_trials``); for each numeric parameter take the min and max of their values in the
transformed space (log for log parameters), widen both ends by ``padding`` × the previous range's transformed
width, and clip to the previous range (a stage never searches outside the one before it). Integers round
outward; floats are rounded outward to 3 significant digits for readable ranges. A categorical parameter keeps
the choices that occur among the top trials.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np
import optuna

__all__ = ["ParamSpec", "SearchSpace", "distance", "union_bounds", "PARAM_TYPES"]

#: Accepted ``type`` values: the canonical three plus the W&B-style aliases ``uniform``/``loguniform``.
PARAM_TYPES = ("float", "uniform", "loguniform", "int", "categorical")
_SPEC_KEYS = ("type", "low", "high", "log", "step", "choices")


def _round_sig(value: float, digits: int, direction: str) -> float:
    """Round ``value`` to ``digits`` significant digits, down (toward −inf) or up."""
    if value == 0 or not math.isfinite(value):
        return value
    exponent = math.floor(math.log10(abs(value))) - digits + 1
    scale = 10.0 ** exponent
    rounded = (math.floor if direction == "down" else math.ceil)(value / scale) * scale
    return float(f"{rounded:.{digits + 2}g}")  # drop binary noise such as 0.30000000000000004


@dataclass(frozen=True)
class ParamSpec:
    """One hyperparameter's range.

    Args:
        name: a training/data key, or ``model.<field>`` for a model-config field.
        kind: ``"float"``, ``"int"`` or ``"categorical"``.
        low, high: inclusive bounds of a numeric parameter (``low ≤ high``; ``low > 0`` when ``log``).
        log: sample (and measure distances) on a log scale.
        step: grid step of a numeric parameter (not with ``log`` for floats, as in Optuna).
        choices: the values of a categorical parameter.
    """

    name: str
    kind: str
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    step: Optional[float] = None
    choices: tuple = ()

    def __post_init__(self):
        where = f"search space parameter {self.name!r}"
        if self.kind not in ("float", "int", "categorical"):
            raise ValueError(f"{where}: kind must be float, int or categorical, got {self.kind!r}")
        if self.kind == "categorical":
            if not self.choices:
                raise ValueError(f"{where}: a categorical parameter needs a non-empty list of choices")
            if len(set(map(repr, self.choices))) != len(self.choices):
                raise ValueError(f"{where}: choices {list(self.choices)} contain duplicates")
            return
        if self.low is None or self.high is None:
            raise ValueError(f"{where}: a {self.kind} parameter needs low and high, got low={self.low} high={self.high}")
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low > self.high:
            raise ValueError(f"{where}: needs finite low ≤ high, got low={self.low} high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"{where}: a log-distributed parameter needs low > 0, got low={self.low}")
        if self.step is not None:
            if self.step <= 0:
                raise ValueError(f"{where}: step must be > 0, got {self.step}")
            if self.log and self.kind == "float":
                raise ValueError(f"{where}: a float parameter cannot have both log: true and a step (Optuna)")
        if self.kind == "int" and (int(self.low) != self.low or int(self.high) != self.high):
            raise ValueError(f"{where}: an int parameter needs integer bounds, got low={self.low} high={self.high}")

    # --- construction and serialisation ---------------------------------------------------------------------
    @classmethod
    def from_config(cls, name: str, value: Any, where: str = "space") -> "ParamSpec":
        """Parse the YAML form (see the module docstring); errors name ``where`` and the parameter."""
        place = f"{where}.{name}"
        if isinstance(value, (list, tuple)):
            value = {"type": "categorical", "choices": list(value)}
        if not isinstance(value, Mapping):
            raise ValueError(f"{place}: expected a mapping such as {{type: float, low: 0.1, high: 1.0}} or a list "
                             f"of choices, got {value!r}")
        unknown = sorted(set(value) - set(_SPEC_KEYS))
        if unknown:
            raise ValueError(f"{place}: unknown key(s) {unknown}; known: {list(_SPEC_KEYS)}")
        kind = value.get("type")
        if kind not in PARAM_TYPES:
            raise ValueError(f"{place}: type must be one of {list(PARAM_TYPES)}, got {kind!r}")
        log = value.get("log", False)
        if not isinstance(log, bool):
            raise ValueError(f"{place}: log must be true or false, got {log!r}")
        if kind == "categorical":
            extra = sorted(set(value) & {"low", "high", "log", "step"})
            if extra:
                raise ValueError(f"{place}: a categorical parameter takes only choices, not {extra}")
            choices = value.get("choices")
            if not isinstance(choices, (list, tuple)):
                raise ValueError(f"{place}: choices must be a list, got {choices!r}")
            try:
                return cls(name, "categorical", choices=tuple(choices))
            except ValueError as error:
                raise ValueError(f"{place}: {error}") from None
        if "choices" in value:
            raise ValueError(f"{place}: choices are only for type: categorical")
        if kind == "loguniform":
            log = True
        if kind == "uniform" and log:
            raise ValueError(f"{place}: type uniform with log: true is contradictory; use loguniform")

        def number(key: str):
            raw = value.get(key)
            if isinstance(raw, str):  # YAML reads 1e-5 (no dot) as a string
                try:
                    raw = float(raw)
                except ValueError:
                    pass
            if isinstance(raw, bool) or not isinstance(raw, (int, float)):
                raise ValueError(f"{place}: {key} must be a number, got {raw!r}")
            return raw

        low, high = number("low"), number("high")
        step = number("step") if value.get("step") is not None else None
        kind = "int" if kind == "int" else "float"
        try:
            if kind == "int":
                return cls(name, "int", low=int(low) if int(low) == low else low,
                           high=int(high) if int(high) == high else high, log=log,
                           step=int(step) if step is not None else None)
            return cls(name, "float", low=float(low), high=float(high), log=log,
                       step=float(step) if step is not None else None)
        except ValueError as error:
            raise ValueError(f"{place}: {error}") from None

    def to_config(self) -> dict[str, Any]:
        """The YAML form (round-trips through :meth:`from_config`)."""
        if self.kind == "categorical":
            return {"type": "categorical", "choices": list(self.choices)}
        config: dict[str, Any] = {"type": self.kind, "low": self.low, "high": self.high}
        if self.log:
            config["log"] = True
        if self.step is not None:
            config["step"] = self.step
        return config

    def describe(self) -> str:
        """A short human form: ``[1e-05, 0.01] log``, ``{2..6}``, ``{LSTM, GRU}``."""
        if self.kind == "categorical":
            return "{" + ", ".join(map(str, self.choices)) + "}"
        suffix = (" log" if self.log else "") + (f" step {self.step}" if self.step else "")
        if self.kind == "int":
            return f"{{{self.low}..{self.high}}}" + suffix
        return f"[{self.low:.4g}, {self.high:.4g}]" + suffix

    # --- Optuna ------------------------------------------------------------------------------------------------
    def distribution(self) -> optuna.distributions.BaseDistribution:
        """The Optuna distribution (what ``trial.suggest_*`` records)."""
        if self.kind == "categorical":
            return optuna.distributions.CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return optuna.distributions.IntDistribution(int(self.low), int(self.high), log=self.log,
                                                        step=int(self.step or 1))
        return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log, step=self.step)

    def suggest(self, trial: optuna.trial.BaseTrial) -> Any:
        """Draw this parameter in ``trial`` (a fixed value when the trial was enqueued or is a retry)."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)

    # --- geometry -----------------------------------------------------------------------------------------------
    def _transform(self, value: float) -> float:
        return math.log(value) if self.log else float(value)

    def _inverse(self, value: float) -> float:
        return math.exp(value) if self.log else float(value)

    def normalise(self, value: Any) -> float:
        """Position of a numeric ``value`` in [0, 1] of this range (log-aware); 0 for a one-point range."""
        if self.kind == "categorical":
            raise TypeError(f"{self.name}: a categorical parameter has no position; compare choices instead")
        low, high = self._transform(self.low), self._transform(self.high)
        if high == low:
            return 0.0
        return (self._transform(value) - low) / (high - low)

    def contains(self, value: Any) -> bool:
        if self.kind == "categorical":
            return any(value == choice for choice in self.choices)
        return self.low <= value <= self.high

    def narrow(self, values: Sequence[Any], padding: float) -> "ParamSpec":
        """The range spanned by ``values`` (the top trials' values), widened by ``padding`` × this range's
        transformed width at each end and clipped to this range (see the module docstring)."""
        if not values:
            raise ValueError(f"{self.name}: cannot narrow from no values")
        if self.kind == "categorical":
            kept = tuple(c for c in self.choices if any(v == c for v in values))
            return ParamSpec(self.name, "categorical", choices=kept or self.choices)
        t_low, t_high = self._transform(self.low), self._transform(self.high)
        pad = padding * (t_high - t_low)
        transformed = [self._transform(v) for v in values]
        new_low = self._inverse(max(t_low, min(transformed) - pad))
        new_high = self._inverse(min(t_high, max(transformed) + pad))
        if self.kind == "int":
            step = int(self.step or 1)
            low_index = math.floor((new_low - self.low) / step + 1e-9)
            high_index = math.ceil((new_high - self.low) / step - 1e-9)
            low = int(self.low) + step * max(0, low_index)
            high = min(int(self.high), int(self.low) + step * high_index)
            return ParamSpec(self.name, "int", low=low, high=max(low, high), log=self.log, step=self.step)
        if self.step is not None:
            low = self.low + self.step * math.floor((new_low - self.low) / self.step + 1e-9)
            high = self.low + self.step * math.ceil((new_high - self.low) / self.step - 1e-9)
        else:
            low, high = _round_sig(new_low, 3, "down"), _round_sig(new_high, 3, "up")
        low, high = max(self.low, low), min(self.high, high)
        return ParamSpec(self.name, "float", low=low, high=max(low, high), log=self.log, step=self.step)


def distance(a: Mapping[str, Any], b: Mapping[str, Any], specs: Sequence[ParamSpec]) -> float:
    """RMS distance of two configurations in the normalised space of ``specs`` (in [0, 1]; module docstring)."""
    if not specs:
        raise ValueError("distance needs at least one parameter")
    squares = []
    for spec in specs:
        if spec.name not in a or spec.name not in b:
            raise KeyError(f"parameter {spec.name!r} missing from a configuration ({sorted(a)} / {sorted(b)})")
        if spec.kind == "categorical":
            squares.append(0.0 if a[spec.name] == b[spec.name] else 1.0)
        else:
            squares.append((spec.normalise(a[spec.name]) - spec.normalise(b[spec.name])) ** 2)
    return float(np.sqrt(np.mean(squares)))


@dataclass
class SearchSpace:
    """An ordered set of :class:`ParamSpec` (YAML order), with sampling, serialisation and narrowing."""

    params: dict[str, ParamSpec] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], where: str = "space") -> "SearchSpace":
        if not isinstance(config, Mapping) or not config:
            raise ValueError(f"{where}: expected a non-empty mapping of parameter name to range, got {config!r}")
        return cls({str(name): ParamSpec.from_config(str(name), value, where) for name, value in config.items()})

    def to_config(self) -> dict[str, dict[str, Any]]:
        return {name: spec.to_config() for name, spec in self.params.items()}

    def __iter__(self):
        return iter(self.params.values())

    def __len__(self) -> int:
        return len(self.params)

    def __contains__(self, name: str) -> bool:
        return name in self.params

    def __getitem__(self, name: str) -> ParamSpec:
        return self.params[name]

    @property
    def names(self) -> list[str]:
        return list(self.params)

    def suggest(self, trial: optuna.trial.BaseTrial) -> dict[str, Any]:
        """Draw every parameter in ``trial``; returns ``{name: value}``."""
        return {name: spec.suggest(trial) for name, spec in self.params.items()}

    def updated(self, other: "SearchSpace") -> "SearchSpace":
        """This space with ``other``'s parameters replacing or adding to it."""
        return SearchSpace({**self.params, **other.params})

    def narrow(
        self, configurations: Sequence[Mapping[str, Any]], *, padding: float = 0.1
    ) -> "SearchSpace":
        """Narrow every parameter to the values of ``configurations`` (the top trials; module docstring)."""
        if not 0 <= padding <= 1:
            raise ValueError(f"padding must be in [0, 1] (a fraction of the previous range), got {padding}")
        narrowed = {}
        for name, spec in self.params.items():
            values = [config[name] for config in configurations if name in config]
            narrowed[name] = spec.narrow(values, padding) if values else spec
        return SearchSpace(narrowed)

    def describe(self) -> dict[str, str]:
        return {name: spec.describe() for name, spec in self.params.items()}


def union_bounds(spaces: Iterable[SearchSpace]) -> list[ParamSpec]:
    """Specs spanning several stages' spaces (same parameter names): the normalisation frame of a selection that
    pools stages (e.g. the thesis's stage 3a + 3b)."""
    spaces = list(spaces)
    names = spaces[0].names
    for space in spaces[1:]:
        if set(space.names) != set(names):
            raise ValueError(f"stages pooled for selection must search the same parameters, got {names} and {space.names}")
    merged = []
    for name in names:
        specs = [space[name] for space in spaces]
        first = specs[0]
        if first.kind == "categorical":
            choices = tuple(dict.fromkeys(c for s in specs for c in s.choices))
            merged.append(ParamSpec(name, "categorical", choices=choices))
        else:
            merged.append(ParamSpec(name, first.kind, low=min(s.low for s in specs), high=max(s.high for s in specs),
                                    log=first.log, step=first.step))
    return merged
