"""The study report: ``trials.csv``, ``summary.md`` and figures, read back from the Optuna storage.

``polsess-analyze-hpo CONFIG.yaml`` (= ``python examples/analyze_hpo.py CONFIG.yaml``; ``run_hpo.py`` also
writes it at the end) produces in ``<output_dir>/report``:

* ``trials.csv``: every trial of every stage and of the validation, one row each (all states, failed and
  surplus ones included, so the row count equals the storage's trial count), with its score, epochs, pruning
  epoch, worker and hyperparameters;
* ``summary.md``: per stage the trials, completed/pruned/failed counts, best and mean score and the search space;
  the top-10 ranges; Pearson and Spearman correlation (``scipy.stats``) of each numeric hyperparameter with the
  score (completed trials; log-distributed parameters as log10 for Pearson); Optuna's parameter importance
  (fANOVA when scikit-learn is installed, otherwise Optuna's PED-ANOVA, which needs no extra package; the report
  says which); the selection with its skipped near-duplicates; the multi-seed validation (mean ± std, winner);
* ``figures/``: ``score_distribution.png`` (per stage, completed and pruned), ``top20.png`` (the 20 best
  completed trials), ``lr_vs_score.png`` (learning rate on a log axis, coloured by log10 weight decay) and
  ``curves.png`` (validation curves, pruned versus completed, per stage).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import optuna
from optuna.trial import TrialState

from .config import HPOConfig, load_hpo_config
from .search import _load_study
from .space import SearchSpace

__all__ = ["write_report", "collect_trials", "correlations", "param_importances", "main", "REPORT_DIR"]

REPORT_DIR = "report"
_BASE_COLUMNS = ["study", "stage", "number", "state", "value", "score", "best_epoch", "epochs_run", "pruned_at",
                 "early_stopped", "diverged", "surplus", "retry_of", "train_seconds", "datetime_start",
                 "datetime_complete", "worker_host", "worker_pid", "candidate", "seed", "metric"]


def _score(trial: optuna.trial.FrozenTrial) -> float:
    if trial.state == TrialState.COMPLETE and trial.value is not None:
        return float(trial.value)
    best = trial.user_attrs.get("best")
    return float(best) if best is not None and trial.state == TrialState.PRUNED else math.nan


def collect_trials(config: HPOConfig, storage) -> list[dict[str, Any]]:
    """One row per trial of every stage study and the validation study (storage order)."""
    rows = []
    for stage in [s.name for s in config.stages] + ["validation"]:
        study = _load_study(config, storage, stage)
        if study is None:
            continue
        for trial in study.get_trials(deepcopy=False):
            attrs = trial.user_attrs
            params = dict(trial.params) if stage != "validation" else dict(attrs.get("hyperparameters") or {})
            duration = (trial.datetime_complete - trial.datetime_start).total_seconds() \
                if trial.datetime_complete and trial.datetime_start else None
            rows.append({
                "study": study.study_name, "stage": stage, "number": trial.number, "state": trial.state.name,
                "value": trial.value, "score": _score(trial), "best_epoch": attrs.get("best_epoch"),
                "epochs_run": attrs.get("epochs_run"), "pruned_at": attrs.get("pruned_at"),
                "early_stopped": attrs.get("early_stopped"), "diverged": bool(attrs.get("diverged")),
                "surplus": bool(attrs.get("surplus")), "retry_of": trial.system_attrs.get("failed_trial"),
                "train_seconds": attrs.get("train_seconds", duration), "datetime_start": trial.datetime_start,
                "datetime_complete": trial.datetime_complete, "worker_host": attrs.get("worker_host"),
                "worker_pid": attrs.get("worker_pid"), "candidate": attrs.get("candidate"), "seed": attrs.get("seed"),
                "metric": attrs.get("metric"), "params": params, "curve": attrs.get("curve") or [],
            })
    return rows


def _temporary(path: Path) -> Path:
    """A private sibling of ``path``: files are written there, then renamed into place, because several workers
    finishing together all write the report (a rename is atomic, interleaved writes are not)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _write_text(path: Path, text: str) -> None:
    temporary = _temporary(path)
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def _save_figure(fig, path: Path) -> None:
    temporary = _temporary(path)
    fig.savefig(temporary, dpi=110, format="png")
    os.replace(temporary, path)


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    param_names = list(dict.fromkeys(name for row in rows for name in row["params"]))
    temporary = _temporary(path)
    with temporary.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(_BASE_COLUMNS + param_names)
        for row in rows:
            cells = [row[c] for c in _BASE_COLUMNS] + [row["params"].get(name) for name in param_names]
            writer.writerow(["" if c is None or (isinstance(c, float) and math.isnan(c)) else c for c in cells])
    os.replace(temporary, path)


def correlations(rows: Sequence[dict[str, Any]], space: SearchSpace) -> list[dict[str, Any]]:
    """Pearson and Spearman correlation (with p-values) of each numeric parameter with the score, over ``rows``
    (completed trials). Pearson uses log10 of log-distributed parameters (a learning rate is searched, and acts,
    on a log scale); Spearman is rank-based, so the scale does not matter. ``None`` where fewer than 3 trials or
    a constant column make it undefined."""
    from scipy import stats

    results = []
    scores = np.array([r["score"] for r in rows], dtype=np.float64)
    for spec in space:
        scale = "categorical" if spec.kind == "categorical" else "log10" if spec.log else "linear"
        entry = {"param": spec.name, "n": len(rows), "scale": scale,
                 "pearson": None, "pearson_p": None, "spearman": None, "spearman_p": None}
        if spec.kind != "categorical" and len(rows) >= 3:
            values = np.array([r["params"].get(spec.name, np.nan) for r in rows], dtype=np.float64)
            mask = np.isfinite(values) & np.isfinite(scores)
            x, y = values[mask], scores[mask]
            if spec.log:
                x = np.log10(x)
            if len(x) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
                pearson = stats.pearsonr(x, y)
                spearman = stats.spearmanr(x, y)
                entry.update(n=int(len(x)), pearson=float(pearson.statistic), pearson_p=float(pearson.pvalue),
                             spearman=float(spearman.statistic), spearman_p=float(spearman.pvalue))
        results.append(entry)
    return results


def param_importances(study: optuna.Study) -> tuple[Optional[dict[str, float]], str]:
    """Optuna's importance of each parameter and the evaluator used (fANOVA with scikit-learn, else PED-ANOVA,
    which needs no extra package). ``(None, reason)`` when it cannot be computed (too few completed trials)."""
    try:
        import sklearn  # noqa: F401

        evaluator, name = optuna.importance.FanovaImportanceEvaluator(seed=0), "fANOVA (optuna, scikit-learn)"
    except ImportError:
        evaluator = optuna.importance.PedAnovaImportanceEvaluator()
        name = "PED-ANOVA (optuna; scikit-learn not installed, so not fANOVA)"
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(completed) < 2:
        return None, f"{name}: not computed, {len(completed)} completed trial(s)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dict(optuna.importance.get_param_importances(study, evaluator=evaluator)), name
    except Exception as error:  # optuna raises ValueError/RuntimeError on degenerate studies
        return None, f"{name}: not computed ({type(error).__name__}: {error})"


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _figures(rows: list[dict[str, Any]], stages: list[str], folder: Path) -> dict[str, str]:
    """Write the four figures; returns ``{file: note}`` (a note says why a figure shows less than usual)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    notes: dict[str, str] = {}
    search = [r for r in rows if r["stage"] in stages]
    completed = [r for r in search if r["state"] == "COMPLETE" and math.isfinite(r["score"])]
    pruned = [r for r in search if r["state"] == "PRUNED" and math.isfinite(r["score"])]
    validation = [r for r in rows if r["stage"] == "validation" and r["state"] in ("COMPLETE", "PRUNED")
                  and math.isfinite(r["score"])]
    rng = np.random.default_rng(0)

    # 1. Score distribution per stage.
    groups = stages + (["validation"] if validation else [])
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(groups)), 4))
    data = [[r["score"] for r in (completed if g != "validation" else validation) if r["stage"] == g] for g in groups]
    ax.boxplot([d if d else [np.nan] for d in data], tick_labels=groups, showfliers=False)
    for i, group in enumerate(groups, start=1):
        done = data[i - 1]
        ax.scatter(i + rng.uniform(-0.15, 0.15, len(done)), done, s=14, color="tab:blue", alpha=0.7,
                   label="completed" if i == 1 else None)
        cut = [r["score"] for r in pruned if r["stage"] == group]
        ax.scatter(i + rng.uniform(-0.15, 0.15, len(cut)), cut, s=14, marker="x", color="tab:red", alpha=0.7,
                   label="pruned (best before)" if i == 1 else None)
    ax.set_ylabel("best validation score (dB)")
    ax.set_title("Score distribution per stage")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    _save_figure(fig, folder / "score_distribution.png")
    plt.close(fig)

    # 2. Top-20 completed trials.
    top = sorted(completed, key=lambda r: -r["score"])[:20]
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.3 * len(top) + 1)))
    colours = {s: plt.cm.tab10(i % 10) for i, s in enumerate(stages)}
    ax.barh(range(len(top)), [r["score"] for r in top], color=[colours[r["stage"]] for r in top])
    ax.set_yticks(range(len(top)), [f"{r['stage']} #{r['number']}" for r in top], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("best validation score (dB)")
    ax.set_title(f"Top {len(top)} completed trials")
    fig.tight_layout()
    _save_figure(fig, folder / "top20.png")
    plt.close(fig)

    # 3. Learning rate (log) versus score, coloured by weight decay.
    fig, ax = plt.subplots(figsize=(6, 4))
    with_lr = [r for r in completed if "learning_rate" in r["params"]]
    if with_lr:
        with_wd = all("weight_decay" in r["params"] and r["params"]["weight_decay"] > 0 for r in with_lr)
        colour = {"c": [math.log10(r["params"]["weight_decay"]) for r in with_lr], "cmap": "viridis"} if with_wd \
            else {"color": "tab:blue"}
        points = ax.scatter([r["params"]["learning_rate"] for r in with_lr], [r["score"] for r in with_lr], s=22,
                            **colour)
        if with_wd:
            fig.colorbar(points, ax=ax, label="log10 weight decay")
        else:
            notes["lr_vs_score.png"] = "weight_decay not searched (or 0) in every trial: one colour"
        ax.set_xscale("log")
    else:
        ax.text(0.5, 0.5, "learning_rate was not searched", ha="center", va="center", transform=ax.transAxes)
        notes["lr_vs_score.png"] = "learning_rate was not searched: empty figure"
    ax.set_xlabel("learning rate")
    ax.set_ylabel("best validation score (dB)")
    ax.set_title("Learning rate vs score (completed trials)")
    fig.tight_layout()
    _save_figure(fig, folder / "lr_vs_score.png")
    plt.close(fig)

    # 4. Validation curves: pruned versus completed, one panel per stage.
    fig, axes = plt.subplots(1, len(stages), figsize=(4.2 * len(stages), 3.4), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        for state, colour in (("COMPLETE", "tab:blue"), ("PRUNED", "tab:red")):
            chosen = [r for r in search if r["stage"] == stage and r["state"] == state and r["curve"]]
            for i, r in enumerate(chosen):
                epochs = [e for e, v in r["curve"]]
                values = [np.nan if v is None else v for e, v in r["curve"]]
                ax.plot(epochs, values, color=colour, alpha=0.6, lw=1, marker="o", ms=3,
                        label=f"{state.lower()} ({len(chosen)})" if i == 0 else None)
        ax.set_title(stage)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8, loc="lower right")
    axes[0][0].set_ylabel("validation score (dB)")
    fig.tight_layout()
    _save_figure(fig, folder / "curves.png")
    plt.close(fig)
    return notes


def write_report(config: HPOConfig, storage=None, out_dir: Optional[Path] = None) -> Path:
    """Write ``trials.csv``, ``summary.md`` and ``figures/`` (module docstring); returns the folder."""
    from .search import SELECTION_ATTR, SPACE_ATTR, SPACE_NOTE_ATTR, validation_results
    from .storage import make_storage

    if storage is None:
        storage = make_storage(config.storage_url(), heartbeat_interval=config.study.heartbeat_interval,
                               grace_period=config.study.grace_period, max_retry=config.study.max_retry)
    folder = Path(out_dir) if out_dir else config.study.output_dir / REPORT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    rows = collect_trials(config, storage)
    _write_csv(rows, folder / "trials.csv")
    stages = [s.name for s in config.stages if _load_study(config, storage, s.name) is not None]
    notes = _figures(rows, stages, folder / "figures")
    metric_names = {r["metric"] for r in rows if r["metric"]}

    lines = [f"# HPO report: {config.study.name}", "",
             f"Storage `{config.storage_url()}`; objective: best validation "
             f"{', '.join(sorted(metric_names)) or 'score'} over epochs (dB, maximised). Trials: {len(rows)} "
             f"(all states; `trials.csv`).", ""]
    lines += ["## Stages", "",
              "| stage | train rows | epochs | trials | completed | pruned | failed | best (dB) | mean completed (dB) |",
              "|---|---|---|---|---|---|---|---|---|"]
    spaces: dict[str, SearchSpace] = {}
    for stage in config.stages:
        study = _load_study(config, storage, stage.name)
        if study is None:
            continue
        spaces[stage.name] = SearchSpace.from_config(study.user_attrs[SPACE_ATTR])
        mine = [r for r in rows if r["stage"] == stage.name]
        done = [r["score"] for r in mine if r["state"] == "COMPLETE"]
        lines.append(
            f"| {stage.name} | {stage.train_max_samples or 'all'} | {stage.num_train_epochs} | {len(mine)} | "
            f"{len(done)} | {sum(r['state'] == 'PRUNED' for r in mine)} | {sum(r['state'] == 'FAIL' for r in mine)} | "
            f"{_fmt(max(done) if done else None)} | {_fmt(float(np.mean(done)) if done else None)} |")
    lines += ["", "Failed trials are killed workers' trials (re-queued and retried) and surplus trials of a race "
              "between workers (they do not train).", "", "## Search spaces", ""]
    for stage in config.stages:
        study = _load_study(config, storage, stage.name)
        if study is None:
            continue
        lines.append(f"- **{stage.name}** ({study.user_attrs.get(SPACE_NOTE_ATTR)}): "
                     + ", ".join(f"`{k}` {v}" for k, v in spaces[stage.name].describe().items()))

    lines += ["", "## Top-10 ranges", "", "Minimum and maximum of each hyperparameter over the 10 best completed "
              "trials of each stage.", ""]
    for stage_name, space in spaces.items():
        top = sorted((r for r in rows if r["stage"] == stage_name and r["state"] == "COMPLETE"),
                     key=lambda r: -r["score"])[:10]
        if not top:
            continue
        lines += [f"**{stage_name}** ({len(top)} trials, {_fmt(top[-1]['score'])} to {_fmt(top[0]['score'])} dB)", "",
                  "| parameter | min | max | best trial |", "|---|---|---|---|"]
        for spec in space:
            values = [r["params"][spec.name] for r in top if spec.name in r["params"]]
            if spec.kind == "categorical":
                lines.append(f"| {spec.name} | {sorted(set(map(str, values)))} | | {top[0]['params'].get(spec.name)} |")
            else:
                lines.append(f"| {spec.name} | {_fmt(min(values))} | {_fmt(max(values))} | "
                             f"{_fmt(top[0]['params'].get(spec.name))} |")
        lines.append("")

    lines += ["## Correlation with the score", "", "Completed trials; Pearson on log10 for log-distributed "
              "parameters, Spearman on ranks; p-values in parentheses. Pooling stages mixes subset sizes (scores "
              "grow with data), so read the per-stage rows first.", "",
              "| stage | parameter | n | Pearson r | Spearman ρ |", "|---|---|---|---|---|"]
    groups = [(name, [r for r in rows if r["stage"] == name and r["state"] == "COMPLETE"], space)
              for name, space in spaces.items()]
    if len(spaces) > 1 and len({tuple(s.names) for s in spaces.values()}) == 1:
        pooled = [r for r in rows if r["stage"] in spaces and r["state"] == "COMPLETE"]
        groups.append(("all stages", pooled, next(iter(spaces.values()))))
    for name, chosen, space in groups:
        for entry in correlations(chosen, space):
            pearson, spearman = (
                f"{_fmt(entry[name], 3)} ({_fmt(entry[name + '_p'], 2)})" if entry[name] is not None else "n/a"
                for name in ("pearson", "spearman")
            )
            lines.append(f"| {name} | {entry['param']} ({entry['scale']}) | {entry['n']} | {pearson} | {spearman} |")

    lines += ["", "## Parameter importance (Optuna)", ""]
    for stage_name in spaces:
        importances, evaluator = param_importances(_load_study(config, storage, stage_name))
        if importances is None:
            lines.append(f"- **{stage_name}**: {evaluator}")
        else:
            lines.append(f"- **{stage_name}** ({evaluator}): "
                         + ", ".join(f"`{k}` {v:.3f}" for k, v in importances.items()))

    validation_study = _load_study(config, storage, "validation")
    selection = validation_study.user_attrs.get(SELECTION_ATTR) if validation_study else None
    if selection:
        lines += ["", "## Selection (diverse top-k)", "",
                  f"From {selection['from_stages']}: top_k {selection['top_k']}, min_distance "
                  f"{selection['min_distance']} (RMS over parameters of normalised, log-aware coordinates)"
                  + (f", max_rank {selection['max_rank']}" if selection.get("max_rank") else "") + ".", "",
                  "| # | trial | search score (dB) | distance to nearest earlier | hyperparameters |",
                  "|---|---|---|---|---|"]
        for i, chosen in enumerate(selection["chosen"], start=1):
            lines.append(f"| {i} | {chosen['key']} | {_fmt(chosen['score'])} | {_fmt(chosen['min_distance'], 3)} | "
                         f"{_params_text(chosen['params'])} |")
        if selection["skipped"]:
            lines += ["", "Skipped as near-duplicates: " + "; ".join(
                f"{s['key']} ({_fmt(s['score'])} dB, distance {s['distance']:.3f} to {s['nearest']})"
                for s in selection["skipped"]) + "."]
        results = validation_results(config, storage)
        if results.get("rows"):
            lines += ["", "## Multi-seed validation", "",
                      f"{config.validation.train_max_samples or 'all'} training rows, {config.validation.num_train_epochs} "
                      f"epochs, seeds {config.validation.seeds}; mean ± sample std (ddof 1).", "",
                      "| rank | configuration | search score (dB) | seed scores (dB) | mean ± std (dB) |",
                      "|---|---|---|---|---|"]
            for rank, row in enumerate(results["rows"], start=1):
                seeds = ", ".join(f"{s}: {v:.3f}" for s, v in zip(row["seeds"], row["scores"]))
                lines.append(f"| {rank} | {row['key']} | {_fmt(row['search_score'])} | {seeds} | "
                             f"{_fmt(row['mean'])} ± {_fmt(row['std'], 2)} |")
            winner = results["winner"]
            lines += ["", f"**Winner: {winner['key']}**, {_fmt(winner['mean'])} ± {_fmt(winner['std'], 2)} dB: "
                      f"{_params_text(winner['params'])}."]

    lines += ["", "## Figures", ""]
    for name, title in (("score_distribution.png", "Score distribution per stage"), ("top20.png", "Top 20 trials"),
                        ("lr_vs_score.png", "Learning rate vs score"), ("curves.png", "Validation curves")):
        lines.append(f"![{title}](figures/{name})" + (f" ({notes[name]})" if name in notes else ""))
    _write_text(folder / "summary.md", "\n".join(lines) + "\n")
    return folder


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(v) if isinstance(v, float) else v}" for k, v in params.items())


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``polsess-analyze-hpo CONFIG.yaml [--output-dir DIR] [--storage URL] [--out REPORT_DIR]``; returns 0."""
    parser = argparse.ArgumentParser(prog="polsess-analyze-hpo",
                                     description="Write the report (CSV, Markdown summary, figures) of an HPO study.")
    parser.add_argument("config", help="the study YAML the search ran with")
    parser.add_argument("--output-dir", help="overrides study.output_dir (where the default storage lives)")
    parser.add_argument("--storage", help="Optuna storage URL (default sqlite:///<output_dir>/study.db)")
    parser.add_argument("--study-name", help="overrides study.name")
    parser.add_argument("--out", help="report folder (default <output_dir>/report)")
    args = parser.parse_args(argv)
    config = load_hpo_config(args.config, output_dir=args.output_dir, storage=args.storage, study_name=args.study_name)
    if config.storage_url().startswith("sqlite:///"):
        database = Path(config.storage_url()[len("sqlite:///"):])
        if not database.is_file():
            raise FileNotFoundError(f"no study database at {database}: run polsess-hpo {args.config} first, or pass "
                                    "--output-dir/--storage")
    folder = write_report(config, out_dir=Path(args.out) if args.out else None)
    print(f"report: {folder / 'summary.md'}")
    return 0
