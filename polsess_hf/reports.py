"""Results reports over finished training runs (``examples/summarize_runs.py``): the seed log's tables.

A run directory is what ``examples/run_separation.py`` writes (:mod:`polsess_hf.training.runner`):
``results.json`` (``best_metric``, ``best_metric_name``, ``best_epoch``, ``epochs_run``, ``history`` of the
validation metrics per epoch) and ``training_config.yaml`` (``model.model_type``, ``data.task``,
``training.seed``, ...). A run without ``results.json`` (still training, or killed) is read from its newest
``checkpoint-*/trainer_state.json`` (``best_metric``, ``log_history``) and marked unfinished.

Runs are grouped by a config key (default ``model_type``) and each group gets, as in the thesis's series-1/2
tables: the number of runs, the **mean**, the **sample standard deviation** (n − 1, ``statistics.stdev``; empty
for a single run), the best and the worst run, the **improvement over a baseline group** in dB and in % of
the baseline's mean (``(mean − baseline) / |baseline| · 100``; the default baseline is the group with the worst
mean, as the seed log measured against ConvTasNet), and the **rank** (best mean first). The value of a run is
its ``best_metric`` (the monitored metric: val SI-SDR, or mean SI-SDRi in per-variant mode) or, with
``metric=KEY``, the best value of ``KEY`` over its validation history.

Outputs: ``runs_summary.md`` (ranking and per-run tables), ``runs_summary.csv`` (one line per group),
``runs.csv`` (one line per run) and ``validation_curves.png`` (the validation metric per epoch, one line per
run, one colour per group).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from .training.runner import RESULTS_NAME, TRAINING_CONFIG_NAME

__all__ = [
    "RunRecord",
    "GroupSummary",
    "load_run",
    "find_runs",
    "config_value",
    "summarize_groups",
    "format_markdown",
    "write_report",
    "plot_validation_curves",
    "main",
]

#: ``--group-by`` shortcuts for the usual keys (anything else: a dotted path such as ``training.learning_rate``
#: or a bare key found in exactly one section).
GROUP_KEY_SHORTCUTS = {"model_type": "model.model_type", "seed": "training.seed", "task": "data.task"}


@dataclass
class RunRecord:
    """One training run.

    Attributes:
        path: the run directory.
        config: its ``training_config.yaml``.
        value: the number summarised (see the module docstring), in the metric's unit (dB for SI-SDR).
        metric: the name of that number, e.g. ``eval_si_sdr``.
        best_epoch: the epoch (1-based) of ``value``, if known.
        epochs_run: epochs trained.
        curve: ``[(epoch, value)]`` of ``metric`` over the validation history.
        finished: ``results.json`` exists (else read from the newest checkpoint).
        greater_is_better: the direction of ``metric``.
    """

    path: Path
    config: dict[str, Any]
    value: float
    metric: str
    best_epoch: Optional[int]
    epochs_run: Optional[float]
    curve: list[tuple[float, float]] = field(default_factory=list)
    finished: bool = True
    greater_is_better: bool = True

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def seed(self) -> Optional[int]:
        return (self.config.get("training") or {}).get("seed")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot be read as JSON ({error})") from error


def _newest_checkpoint(run_dir: Path) -> Optional[Path]:
    checkpoints = []
    for path in run_dir.glob("checkpoint-*"):
        suffix = path.name.rsplit("-", 1)[-1]
        if suffix.isdigit() and (path / "trainer_state.json").is_file():
            checkpoints.append((int(suffix), path))
    return max(checkpoints)[1] if checkpoints else None


def _is_run(path: Path) -> bool:
    return (path / RESULTS_NAME).is_file() or (path / TRAINING_CONFIG_NAME).is_file()


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Run directories from ``paths``: each is a run directory, or a folder whose subfolders are runs."""
    found: list[Path] = []
    for given in paths:
        path = Path(given).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"run directory {str(path)!r} does not exist")
        if _is_run(path):
            found.append(path)
            continue
        children = sorted(child for child in path.iterdir() if child.is_dir() and _is_run(child))
        if not children:
            raise FileNotFoundError(
                f"{path} is not a run directory (no {RESULTS_NAME} or {TRAINING_CONFIG_NAME}) and none of its "
                "subfolders is one; pass the output_dir of examples/run_separation.py"
            )
        found.extend(children)
    return found


def load_run(run_dir: str | Path, *, metric: Optional[str] = None) -> RunRecord:
    """Read one run directory (see the module docstring); ``metric`` picks a history key instead of
    ``best_metric``. Errors name the file and the key that is missing."""
    run_dir = Path(run_dir)
    config_path = run_dir / TRAINING_CONFIG_NAME
    if not config_path.is_file():
        config_path = run_dir / "best" / TRAINING_CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"run {run_dir} has no {TRAINING_CONFIG_NAME} (nor best/{TRAINING_CONFIG_NAME})")
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    greater_is_better = bool((config.get("training") or {}).get("greater_is_better", True))

    results_path = run_dir / RESULTS_NAME
    if results_path.is_file():
        results = _read_json(results_path)
        for key in ("best_metric", "best_metric_name"):
            if key not in results:
                raise ValueError(f"{results_path} has no {key!r}; is it a results.json of run_separation.py?")
        best_name, best_value = results["best_metric_name"], results["best_metric"]
        history = [entry for entry in results.get("history", []) if "epoch" in entry]
        best_epoch, epochs_run, finished = results.get("best_epoch"), results.get("epochs_run"), True
    else:
        checkpoint = _newest_checkpoint(run_dir)
        if checkpoint is None:
            raise FileNotFoundError(f"run {run_dir} has neither {RESULTS_NAME} nor a checkpoint-*/trainer_state.json")
        state = _read_json(checkpoint / "trainer_state.json")
        metric_for_best = (config.get("training") or {}).get("metric_for_best_model", "si_sdr")
        best_name = metric_for_best if metric_for_best.startswith("eval_") else f"eval_{metric_for_best}"
        best_value = state.get("best_metric")
        history = [entry for entry in state.get("log_history", []) if "epoch" in entry and best_name in entry]
        best_epoch = next((round(e["epoch"]) for e in history if e.get(best_name) == best_value), None)
        epochs_run, finished = state.get("epoch"), False
        if best_value is None:
            raise ValueError(f"{checkpoint / 'trainer_state.json'} has no best_metric yet (no evaluation ran)")

    name = metric or best_name
    curve = [(float(entry["epoch"]), float(entry[name])) for entry in history if name in entry]
    if metric is None or metric == best_name:
        value = float(best_value)
    else:
        if not curve:
            available = sorted({k for entry in history for k in entry if k.startswith("eval_")})
            raise ValueError(f"run {run_dir}: metric {metric!r} is not in its validation history; available: {available}")
        pick = max if greater_is_better else min
        best_epoch, value = pick(curve, key=lambda point: point[1])
        best_epoch = round(best_epoch)
    return RunRecord(
        path=run_dir, config=config, value=value, metric=name, best_epoch=best_epoch, epochs_run=epochs_run,
        curve=curve, finished=finished, greater_is_better=greater_is_better,
    )


def config_value(config: dict[str, Any], key: str) -> Any:
    """The value of ``key`` in a training config: a shortcut (:data:`GROUP_KEY_SHORTCUTS`), a dotted path
    (``training.learning_rate``) or a bare key present in exactly one section."""
    key = GROUP_KEY_SHORTCUTS.get(key, key)
    if "." in key:
        node: Any = config
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise KeyError(f"training config has no {key!r} (missing {part!r})")
            node = node[part]
        return node
    sections = [name for name, section in config.items() if isinstance(section, dict) and key in section]
    if len(sections) != 1:
        where = f"is in {sections}; write e.g. {sections[0]}.{key}" if sections else "is in no section"
        raise KeyError(f"group key {key!r} {where}")
    return config[sections[0]][key]


@dataclass
class GroupSummary:
    """One line of the ranking table (see the module docstring for the definitions)."""

    group: str
    runs: list[RunRecord]
    mean: float
    std: float
    best: RunRecord
    worst: RunRecord
    improvement: float = float("nan")
    improvement_percent: float = float("nan")
    rank: int = 0
    is_baseline: bool = False

    @property
    def n(self) -> int:
        return len(self.runs)


def summarize_groups(
    records: Sequence[RunRecord], *, group_by: str = "model_type", baseline: Optional[str] = None
) -> list[GroupSummary]:
    """Group ``records`` by ``group_by`` and return the summaries in rank order (best mean first)."""
    if not records:
        raise ValueError("no runs to summarize")
    metrics = sorted({r.metric for r in records})
    if len(metrics) > 1:
        raise ValueError(
            f"the runs monitor different metrics {metrics}; pass metric=... (--metric) to compare one of them"
        )
    greater = records[0].greater_is_better
    groups: dict[str, list[RunRecord]] = {}
    for record in records:
        try:
            key = config_value(record.config, group_by)
        except KeyError as error:
            raise KeyError(f"run {record.path}: {error.args[0]}") from None
        groups.setdefault(str(key), []).append(record)

    summaries = []
    for group, runs in groups.items():
        runs.sort(key=lambda r: (r.seed is None, r.seed if isinstance(r.seed, int) else 0, r.name))  # by seed
        values = [r.value for r in runs]
        ordered = sorted(runs, key=lambda r: r.value, reverse=greater)
        summaries.append(
            GroupSummary(
                group=group, runs=runs, mean=statistics.fmean(values),
                std=statistics.stdev(values) if len(values) > 1 else float("nan"),
                best=ordered[0], worst=ordered[-1],
            )
        )
    summaries.sort(key=lambda s: s.mean, reverse=greater)
    for rank, summary in enumerate(summaries, start=1):
        summary.rank = rank
    if baseline is None:
        reference = summaries[-1]
    else:
        matches = [s for s in summaries if s.group == str(baseline)]
        if not matches:
            raise ValueError(f"baseline group {baseline!r} not found; groups: {[s.group for s in summaries]}")
        reference = matches[0]
    reference.is_baseline = True
    for summary in summaries:
        summary.improvement = summary.mean - reference.mean
        summary.improvement_percent = (
            summary.improvement / abs(reference.mean) * 100 if reference.mean != 0 else float("nan")
        )
    return summaries


def _fmt(value: Optional[float], digits: int = 2, signed: bool = False, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return (f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}") + unit


def _unit(metric: str) -> str:
    return " dB" if "sdr" in metric else ""


def format_markdown(summaries: Sequence[GroupSummary], *, group_by: str = "model_type") -> str:
    """The ranking table and one per-run table per group, as Markdown."""
    metric = summaries[0].runs[0].metric
    unit = _unit(metric)
    baseline = next(s.group for s in summaries if s.is_baseline)
    lines = [
        f"# Runs summary: {metric} by {group_by}",
        "",
        f"Value of a run: best {metric}{unit.strip() and f' ({unit.strip()})'}; std = sample standard deviation "
        f"(n − 1); improvement = mean − mean of the baseline ({baseline}), and in % of |baseline mean|.",
        "",
        f"| Rank | {group_by} | Runs | Mean | Std | Best run | Worst run | vs {baseline} |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for s in summaries:
        versus = "baseline" if s.is_baseline else (
            f"{_fmt(s.improvement, signed=True, unit=unit)} ({_fmt(s.improvement_percent, 0, signed=True, unit='%')})"
        )
        lines.append(
            f"| {s.rank} | {s.group} | {s.n} | {_fmt(s.mean, unit=unit)} | {_fmt(s.std, unit=unit)} | "
            f"{_fmt(s.best.value, unit=unit)} | {_fmt(s.worst.value, unit=unit)} | {versus} |"
        )
    for s in summaries:
        lines += [
            "",
            f"## {s.group}",
            "",
            "| Run | Seed | Best | Epoch | Epochs run | Finished |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for run in s.runs:
            epochs = _fmt(run.epochs_run, 0) if run.epochs_run is not None else "–"
            lines.append(
                f"| {run.name} | {run.seed if run.seed is not None else '–'} | {_fmt(run.value, unit=unit)} | "
                f"{run.best_epoch if run.best_epoch is not None else '–'} | {epochs} | {'yes' if run.finished else 'no'} |"
            )
    return "\n".join(lines) + "\n"


def plot_validation_curves(records: Sequence[RunRecord], path: str | Path, *, group_by: str = "model_type") -> Path:
    """PNG: the validation metric per epoch of every run, one colour per group, the best epoch marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 4.5), constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = "osD^vP"
    groups: dict[str, str] = {}
    runs_in_group: dict[str, int] = {}
    for record in records:
        group = str(config_value(record.config, group_by))
        color = groups.setdefault(group, colors[len(groups) % len(colors)])
        marker = markers[runs_in_group.get(group, 0) % len(markers)]  # colour = group, marker = run within it
        runs_in_group[group] = runs_in_group.get(group, 0) + 1
        if not record.curve:
            continue
        epochs, values = zip(*record.curve)
        label = f"{group} · {record.name}" + (f" (seed {record.seed})" if record.seed is not None else "")
        axis.plot(epochs, values, marker=marker, markersize=3, color=color, label=label,
                  linestyle="-" if record.finished else "--")
        if record.best_epoch is not None:
            axis.plot([record.best_epoch], [record.value], marker="*", markersize=10, color=color)
    metric = records[0].metric
    axis.set_xlabel("epoch")
    axis.set_ylabel(f"{metric}{_unit(metric).replace(' dB', ' (dB)')}")
    axis.set_title(f"Validation curves ({metric}; ★ best epoch; dashed: unfinished)", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="best")
    path = Path(path)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write_report(
    run_dirs: Sequence[str | Path],
    output_dir: str | Path,
    *,
    group_by: str = "model_type",
    baseline: Optional[str] = None,
    metric: Optional[str] = None,
    plot: bool = True,
) -> tuple[list[GroupSummary], dict[str, Path]]:
    """Load the runs, summarise them and write the Markdown, the two CSVs and (``plot``) the figure."""
    records = [load_run(path, metric=metric) for path in find_runs(run_dirs)]
    summaries = summarize_groups(records, group_by=group_by, baseline=baseline)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "markdown": output_dir / "runs_summary.md",
        "csv": output_dir / "runs_summary.csv",
        "runs_csv": output_dir / "runs.csv",
    }
    paths["markdown"].write_text(format_markdown(summaries, group_by=group_by), encoding="utf-8")
    with open(paths["csv"], "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["rank", group_by, "runs", "mean", "std", "best", "best_run", "worst", "worst_run",
                         "improvement", "improvement_percent", "baseline", "metric"])
        for s in summaries:
            writer.writerow([s.rank, s.group, s.n, s.mean, "" if math.isnan(s.std) else s.std, s.best.value,
                             s.best.name, s.worst.value, s.worst.name, s.improvement,
                             "" if math.isnan(s.improvement_percent) else s.improvement_percent,
                             int(s.is_baseline), s.runs[0].metric])
    with open(paths["runs_csv"], "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([group_by, "run", "path", "seed", "value", "best_epoch", "epochs_run", "finished"])
        for s in summaries:
            for run in s.runs:
                writer.writerow([s.group, run.name, str(run.path), run.seed, run.value, run.best_epoch,
                                 run.epochs_run, int(run.finished)])
    if plot:
        paths["figure"] = plot_validation_curves(records, output_dir / "validation_curves.png", group_by=group_by)
    return summaries, paths


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``summarize_runs.py RUN_DIR [RUN_DIR ...] [--group-by KEY] [--baseline GROUP] [--metric KEY]``."""
    parser = argparse.ArgumentParser(
        prog="summarize_runs.py",
        description="Aggregate finished run_separation.py runs (e.g. three seeds per model) into ranking tables.",
    )
    parser.add_argument("run_dirs", nargs="+", help="run directories (output_dir), or folders that contain them")
    parser.add_argument("--group-by", default="model_type",
                        help="config key to group by: model_type (default), seed, task, or a dotted path such as "
                             "training.learning_rate")
    parser.add_argument("--baseline", help="group the improvements are measured against (default: the worst mean)")
    parser.add_argument("--metric", help="validation key to compare, e.g. eval_si_sdri (default: each run's best_metric)")
    parser.add_argument("--output-dir", default="runs_summary")
    parser.add_argument("--no-plot", action="store_true", help="skip validation_curves.png")
    args = parser.parse_args(argv)
    try:
        summaries, paths = write_report(
            args.run_dirs, args.output_dir, group_by=args.group_by, baseline=args.baseline, metric=args.metric,
            plot=not args.no_plot,
        )
    except (FileNotFoundError, ValueError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) else error
        raise SystemExit(f"summarize_runs: error: {message}") from error
    print(format_markdown(summaries, group_by=args.group_by))
    print("written: " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
