"""Per-variant evaluation tables of a trained separator (``polsess-evaluate``, ``examples/evaluate_separation.py``).

One pass per MM-IPC variant (SER, SR, ER, R, SE, S, E, C; indoor variants on the indoor rows, outdoor variants
on the outdoor rows, C on all rows, as the thesis's ``evaluate.py``) plus the pooled SER+SE set (every row
unmodified: the thesis's validation set), or one pass per Libri2Mix mixture folder (``mix_clean`` = Clean,
``mix_both`` = Noisy). Each row of the table has SI-SDR, SI-SDRi, SDR, PESQ, PESQi, STOI, STOIi (see
:mod:`polsess_hf.metrics`: PIT-reordered estimates, zero-mean SI-SDR) and ``n``, the number of items.

**Averaging.** A row is the mean over its items. The **AVERAGE** row is the mean over every item of the
variant rows, i.e. the variant rows weighted by their item counts ``n`` (the pooled SER+SE row is not part of
it: its items are already in SER and SE). The thesis instead averaged per-batch means within a variant and
then took the unweighted mean of the variant rows. Both agree when every batch is full and every variant has
the same number of items; otherwise a short last batch weighs its items ``batch_size / last_batch_size`` times
more, and a variant with fewer rows (an indoor variant on an outdoor-heavy split) weighs more in the
thesis AVERAGE. The JSON output carries the thesis-style numbers too (``thesis_aggregation``) for comparison.
Items whose metric could not be computed (NaN, see :mod:`polsess_hf.metrics`) are left out of that metric's
means and counted in ``<metric>_invalid``.

**Inference** runs in fp32, in eval mode, under ``torch.no_grad``, ``batch_size`` items at a time (items of
different lengths, e.g. Libri2Mix, are never zero-padded into one forward pass: each length group runs on its
own). An item evaluated twice (the pooled SER+SE set repeats SER and SE items) is scored once.

Outputs in ``output_dir``: ``evaluation.md``, ``evaluation.csv``, ``evaluation.json`` (the same rows),
``evaluation_items.csv`` (one line per item and set) and, with ``plot=True``, ``evaluation.png``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import torch

from .data.variants import ALL_VARIANTS, TASK_N_SRC, validate_task, validate_variants
from .pretrained import load_pretrained_separator as load_separator
from .metrics import METRIC_NAMES, pesq_mode, require_pesq, require_stoi, separation_metrics

__all__ = [
    "POOLED_SET",
    "EvaluationSet",
    "EvaluationResult",
    "load_separator",
    "resolve_task",
    "detect_dataset",
    "build_evaluation_sets",
    "evaluate_separator",
    "summarize_items",
    "batch_mean",
    "write_outputs",
    "format_markdown",
    "plot_evaluation",
    "main",
]

#: Name of the pooled full-complexity row (indoor rows as SER, outdoor rows as SE).
POOLED_SET = "SER+SE"
AVERAGE_ROW = "AVERAGE"
OUTPUT_STEM = "evaluation"
_HEADERS = {
    "si_sdr": "SI-SDR", "si_sdri": "SI-SDRi", "sdr": "SDR", "pesq": "PESQ", "pesqi": "PESQi", "stoi": "STOI",
    "stoii": "STOIi",
}  # fmt: skip
_DECIMALS = {"si_sdr": 2, "si_sdri": 2, "sdr": 2, "pesq": 2, "pesqi": 2, "stoi": 3, "stoii": 3}


# ---------------------------------------------------------------------------------------------------------------
# Model, task and data
# ---------------------------------------------------------------------------------------------------------------
def resolve_task(model, model_name_or_path: str | os.PathLike, task: Optional[str] = None) -> str:
    """The task to evaluate: ``task`` if given, else the training config saved with the model
    (``training_config.yaml``: ``data.task``), else SB for a two-output model. Checks it against ``n_src``."""
    n_src = int(model.config.n_src)
    if task is None:
        config_path = Path(str(model_name_or_path)).expanduser() / "training_config.yaml"
        if config_path.is_file():
            import yaml

            task = ((yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}).get("data") or {}).get("task")
        if task is None:
            if n_src != 2:
                raise ValueError(
                    f"the model has n_src={n_src} and no training_config.yaml says its task: pass task ES or EB"
                )
            task = "SB"
    validate_task(task)
    if TASK_N_SRC[task] != n_src:
        raise ValueError(
            f"task {task} needs a model with n_src={TASK_N_SRC[task]}, but the model has n_src={n_src}"
        )
    return task


def detect_dataset(data_root: str | os.PathLike) -> str:
    """``"librimix"`` for a folder holding ``wav8k/`` or ``wav16k/``, else ``"polsess"``."""
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data root {str(root)!r} does not exist or is not a directory")
    return "librimix" if (root / "wav8k").is_dir() or (root / "wav16k").is_dir() else "polsess"


@dataclass
class EvaluationSet:
    """One row of the table: a name, its dataset, and whether it counts towards AVERAGE."""

    name: str
    dataset: Any
    in_average: bool = True


def build_evaluation_sets(
    data_root: str | os.PathLike,
    *,
    dataset: str = "auto",
    split: str = "test",
    task: str = "SB",
    variants: Optional[Sequence[str]] = None,
    pooled: bool = True,
    max_samples: Optional[int] = None,
    sample_rate: int = 8000,
    cache_dir: Optional[str | os.PathLike] = None,
    librimix_mode: str = "min",
) -> tuple[list[EvaluationSet], dict[str, str]]:
    """``(sets, skipped)``: the datasets to evaluate, in table order, and ``{name: why}`` for variants that
    have no rows here (an indoor variant on a corpus without indoor rows).

    PolSESS: one set per variant of ``variants`` (default all 8, thesis order), each forced to that variant
    (:func:`polsess_hf.data.load_polsess`), plus the pooled SER+SE set when ``pooled``. Libri2Mix: one set per
    mixture folder present (``mix_clean``, ``mix_both``); ``variants`` and ``pooled`` do not apply.
    """
    validate_task(task)
    kind = detect_dataset(data_root) if dataset == "auto" else dataset
    if kind not in ("polsess", "librimix"):
        raise ValueError(f"dataset must be 'auto', 'polsess' or 'librimix', got {dataset!r}")
    sets: list[EvaluationSet] = []
    skipped: dict[str, str] = {}
    if kind == "librimix":
        from .data.librimix import LIBRIMIX_MIXTURES, load_libri2mix

        if variants:
            raise ValueError(f"variants {list(variants)} are PolSESS MM-IPC variants; Libri2Mix has none")
        for mixture in LIBRIMIX_MIXTURES:
            try:
                data = load_libri2mix(
                    data_root, split, sample_rate=sample_rate, mode=librimix_mode, mixture=mixture,
                    max_samples=max_samples, task=task,
                )
            except FileNotFoundError as error:
                if "no Libri2Mix folder" not in str(error):
                    raise  # source files missing: a broken corpus, not an absent mixture folder
                skipped[mixture] = str(error)
                continue
            sets.append(EvaluationSet(mixture, data))
        if not sets:
            raise FileNotFoundError(" ".join(skipped.values()))
        return sets, skipped

    from .data import load_polsess
    from .data.audio import AudioReadError

    chosen = validate_variants(variants, what="variants") or ALL_VARIANTS
    chosen = [v for v in ALL_VARIANTS if v in chosen]  # table order: the thesis's
    common = dict(task=task, max_samples=max_samples, sample_rate=sample_rate, cache_dir=cache_dir)
    requested = [(v, [v]) for v in chosen]
    if pooled:
        requested.append((POOLED_SET, ["SER", "SE"]))
    for name, allowed in requested:
        try:
            data = load_polsess(data_root, split, variants=allowed, **common)
        except AudioReadError as error:
            if "Hz was expected" in str(error):
                raise ValueError(
                    f"the model works at {sample_rate} Hz but the corpus is not at that rate ({error}); "
                    "evaluate a model trained at the corpus's rate"
                ) from error
            raise
        if len(data) == 0:
            family = "indoor (reverberant)" if name in ("SER", "SR", "ER", "R") else "outdoor"
            skipped[name] = f"no {family} rows in the {split} split"
            continue
        sets.append(EvaluationSet(name, data, in_average=name != POOLED_SET))
    if not any(s.in_average for s in sets):
        raise ValueError(f"none of the variants {list(chosen)} has rows in the {split} split of {data_root}")
    return sets, skipped


# ---------------------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class EvaluationResult:
    """What :func:`evaluate_separator` found.

    Attributes:
        rows: table rows (dicts with ``variant``, the metrics, ``n`` and ``<metric>_invalid``), in table
            order: the variant rows, AVERAGE, then the pooled row.
        items: one dict per evaluated item and set (``set``, ``position``, ``id``, ``variant``, metrics).
        metrics: the metric names computed, in column order.
        meta: run description (model, data, task, rate, batch size, device, timings, ...).
        thesis_aggregation: per row, the thesis's mean of batch means; AVERAGE = unweighted mean of the rows.
        example: one item's ``mixture``, ``references``, ``estimates`` (PIT order) for the figure.
    """

    rows: list[dict[str, Any]]
    items: list[dict[str, Any]]
    metrics: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict)
    thesis_aggregation: dict[str, dict[str, float]] = field(default_factory=dict)
    example: Optional[dict[str, Any]] = None

    def row(self, name: str) -> dict[str, Any]:
        for row in self.rows:
            if row["variant"] == name:
                return row
        raise KeyError(f"no row {name!r}; rows: {[r['variant'] for r in self.rows]}")


def _finite_mean(values: Iterable[float]) -> float:
    values = np.asarray(list(values), dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else float("nan")


def summarize_items(name: str, items: Sequence[dict[str, Any]], metrics: Sequence[str]) -> dict[str, Any]:
    """One table row: the finite mean of each metric over ``items``, ``n`` and ``<metric>_invalid``."""
    row: dict[str, Any] = {"variant": name}
    for metric in metrics:
        row[metric] = _finite_mean(item[metric] for item in items)
    row["n"] = len(items)
    for metric in metrics:
        row[f"{metric}_invalid"] = int(sum(not np.isfinite(item[metric]) for item in items))
    return row


def batch_mean(values: Sequence[float], batch_size: int) -> float:
    """The thesis's aggregation: mean over consecutive batches of ``batch_size`` of each batch's finite mean."""
    values = np.asarray(values, dtype=np.float64)
    means = [_finite_mean(values[start : start + batch_size]) for start in range(0, len(values), batch_size)]
    return _finite_mean(means)


def _forward(model, inputs: torch.Tensor, device) -> torch.Tensor:
    """One fp32 forward pass: ``inputs`` ``(batch, time)`` → estimates ``(batch, n_src, time)`` on the CPU."""
    return model(input_values=inputs.to(device)).estimates.float().cpu()


def evaluate_separator(
    model,
    sets: Sequence[EvaluationSet],
    *,
    batch_size: int = 4,
    sdr: bool = True,
    pesq: bool = True,
    stoi: bool = True,
    convention: str = "zero_mean",
    num_workers: int = 0,
    progress: bool = True,
) -> EvaluationResult:
    """Run ``model`` over every set and build the table (see the module docstring for the averaging).

    Args:
        model: a loaded separator (:func:`load_separator`); its ``config.sampling_rate`` is the audio's rate.
        sets: from :func:`build_evaluation_sets`.
        batch_size: items per forward pass.
        sdr, pesq, stoi: compute these metrics (PESQ/STOI raise :class:`~polsess_hf.metrics.MissingMetricDependency`
            here, before any inference, when their package is missing).
        convention: SI-SDR(i) convention, ``"zero_mean"`` or ``"thesis"`` (:mod:`polsess_hf.metrics`).
        num_workers: DataLoader workers reading the audio.
        progress: show a tqdm bar per set.
    """
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from .data.collator import SeparationCollator

    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if pesq:
        require_pesq()
    if stoi:
        require_stoi()
    enabled = {"sdr": sdr, "pesq": pesq, "pesqi": pesq, "stoi": stoi, "stoii": stoi}
    metrics = tuple(m for m in METRIC_NAMES if enabled.get(m, True))
    sample_rate = int(model.config.sampling_rate)
    device = next(iter(model.parameters()), torch.empty(0)).device
    model.eval()

    cache: dict[tuple[str, str], dict[str, float]] = {}
    items: list[dict[str, Any]] = []
    example = None
    seconds: dict[str, float] = {}
    collator = SeparationCollator("pad", return_metadata=True)
    for evaluation_set in sets:
        start = time.perf_counter()
        loader = DataLoader(evaluation_set.dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                            collate_fn=collator)
        position = 0
        with tqdm(total=len(evaluation_set.dataset), desc=evaluation_set.name, unit="item", disable=not progress,
                  leave=False) as bar:
            for batch in loader:
                keys = list(zip(batch["variant"], batch["id"]))
                todo = [i for i, key in enumerate(keys) if key not in cache]
                # Equal-length groups: zero padding would change the estimates of the shorter items.
                by_length: dict[int, list[int]] = {}
                for i in todo:
                    by_length.setdefault(int(batch["lengths"][i]), []).append(i)
                for length, group in by_length.items():
                    inputs = batch["input_values"][group, :length]
                    labels = batch["labels"][group, :, :length]
                    with torch.no_grad():
                        estimates = _forward(model, inputs, device)
                    scored = separation_metrics(
                        estimates, labels, inputs, sample_rate=sample_rate, sdr=sdr, pesq=pesq, stoi=stoi,
                        convention=convention,
                    )
                    for j, i in enumerate(group):
                        cache[keys[i]] = {m: float(scored.values[m][j]) for m in metrics}
                    if example is None:
                        example = {
                            "set": evaluation_set.name, "id": keys[group[0]][1], "variant": keys[group[0]][0],
                            "mixture": inputs[0].numpy(), "references": labels[0].numpy(),
                            "estimates": scored.estimates[0].numpy(), "sample_rate": sample_rate,
                        }  # fmt: skip
                for i, key in enumerate(keys):
                    items.append({"set": evaluation_set.name, "position": position, "id": key[1], "variant": key[0],
                                  **cache[key]})
                    position += 1
                bar.update(len(keys))
        seconds[evaluation_set.name] = time.perf_counter() - start

    by_set = {s.name: [item for item in items if item["set"] == s.name] for s in sets}
    variant_rows = [summarize_items(s.name, by_set[s.name], metrics) for s in sets if s.in_average]
    averaged = [item for s in sets if s.in_average for item in by_set[s.name]]
    rows = variant_rows + [summarize_items(AVERAGE_ROW, averaged, metrics)]
    rows += [summarize_items(s.name, by_set[s.name], metrics) for s in sets if not s.in_average]

    thesis = {
        s.name: {m: batch_mean([item[m] for item in by_set[s.name]], batch_size) for m in metrics} for s in sets
    }
    thesis[AVERAGE_ROW] = {
        m: _finite_mean(thesis[s.name][m] for s in sets if s.in_average) for m in metrics
    }
    meta = {
        "sample_rate": sample_rate,
        "batch_size": batch_size,
        "device": str(device),
        "convention": convention,
        "pesq_mode": pesq_mode(sample_rate)[0] if pesq else None,
        "seconds": seconds,
        "unique_items_scored": len(cache),
    }
    return EvaluationResult(rows=rows, items=items, metrics=metrics, meta=meta, thesis_aggregation=thesis,
                            example=example)


# ---------------------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------------------
def _columns(metrics: Sequence[str]) -> list[str]:
    return ["variant", *metrics, "n", *(f"{m}_invalid" for m in metrics)]


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN
    return value


def format_markdown(result: EvaluationResult) -> str:
    """The table as Markdown, with a short header and the notes a reader needs to compare numbers."""
    meta = result.meta
    header = ["Variant", *(_HEADERS[m] for m in result.metrics), "n"]
    lines = [
        f"# Evaluation: {meta.get('model', 'model')}",
        "",
        f"- data: {meta.get('dataset', '?')} `{meta.get('data_root', '?')}`, split `{meta.get('split', '?')}`, "
        f"task {meta.get('task', '?')}, {meta['sample_rate']} Hz"
        + (f", first {meta['max_samples']} rows per set" if meta.get("max_samples") else ""),
        f"- SI-SDR/SI-SDRi in dB ({'zero-mean' if meta['convention'] == 'zero_mean' else 'thesis convention'},"
        " PIT-reordered estimates); SDR = BSS-eval SDR in dB"
        + (f"; PESQ {meta['pesq_mode']}" if meta.get("pesq_mode") else ""),
        "- AVERAGE = mean over the items of the variant rows (weighted by n); "
        + (f"the pooled {POOLED_SET} row is not part of it" if any(r["variant"] == POOLED_SET for r in result.rows)
           else "thesis-style batch means are in the JSON"),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    for row in result.rows:
        name = f"**{row['variant']}**" if row["variant"] == AVERAGE_ROW else row["variant"]
        cells = [name]
        for metric in result.metrics:
            value = row[metric]
            cells.append(f"{value:.{_DECIMALS[metric]}f}" if math.isfinite(value) else "–")
        cells.append(str(row["n"]))
        lines.append("| " + " | ".join(cells) + " |")
    invalid = [
        f"{_HEADERS[m]} {row[f'{m}_invalid']} ({row['variant']})"
        for row in result.rows if row["variant"] != AVERAGE_ROW for m in result.metrics if row[f"{m}_invalid"]
    ]
    if invalid:
        lines += ["", "Items left out of a mean (metric not computable, e.g. silent reference): " + ", ".join(invalid)]
    skipped = meta.get("skipped") or {}
    if skipped:
        lines += ["", "Not evaluated: " + "; ".join(f"{name} ({why})" for name, why in skipped.items())]
    return "\n".join(lines) + "\n"


def write_outputs(result: EvaluationResult, output_dir: str | os.PathLike, *, plot: bool = False) -> dict[str, Path]:
    """Write Markdown, CSV, JSON, the per-item CSV and (``plot``) the PNG; returns ``{kind: path}``."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "markdown": output_dir / f"{OUTPUT_STEM}.md",
        "csv": output_dir / f"{OUTPUT_STEM}.csv",
        "json": output_dir / f"{OUTPUT_STEM}.json",
        "items": output_dir / f"{OUTPUT_STEM}_items.csv",
    }
    columns = _columns(result.metrics)
    paths["markdown"].write_text(format_markdown(result), encoding="utf-8")
    with open(paths["csv"], "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in result.rows:
            writer.writerow({k: ("" if isinstance(row[k], float) and not math.isfinite(row[k]) else row[k])
                             for k in columns})
    with open(paths["items"], "w", newline="", encoding="utf-8") as handle:
        item_columns = ["set", "position", "id", "variant", *result.metrics]
        writer = csv.DictWriter(handle, fieldnames=item_columns)
        writer.writeheader()
        for item in result.items:
            writer.writerow({k: item[k] for k in item_columns})
    if plot:
        paths["figure"] = plot_evaluation(result, output_dir / f"{OUTPUT_STEM}.png")
    document = {
        **result.meta,
        "metrics": list(result.metrics),
        "averaging": "rows: mean over items; AVERAGE: mean over the items of the variant rows (weighted by n); "
        "thesis_aggregation: mean of per-batch means, AVERAGE unweighted over the variant rows",
        "rows": [{k: _json_value(row[k]) for k in columns} for row in result.rows],
        "thesis_aggregation": {
            name: {m: _json_value(v) for m, v in values.items()} for name, values in result.thesis_aggregation.items()
        },
        "files": {kind: str(path) for kind, path in paths.items()},
    }
    paths["json"].write_text(json.dumps(document, indent=2), encoding="utf-8")
    return paths


def plot_evaluation(result: EvaluationResult, path: str | os.PathLike) -> Path:
    """PNG: spectrograms of one mixture, its references and PIT-ordered estimates; SI-SDRi by row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    example = result.example
    n_src = 0 if example is None else example["references"].shape[0]
    n_rows = 1 + (1 + n_src if example is not None else 0)
    figure = plt.figure(figsize=(11, 2.4 * n_rows + 0.6), constrained_layout=True)
    grid = figure.add_gridspec(n_rows, 2)
    if example is not None:
        from scipy.signal import spectrogram as stft_power

        rate = example["sample_rate"]

        def power_db(signal):
            frequencies, times, power = stft_power(signal, fs=rate, nperseg=256, noverlap=192)
            return frequencies, times, 10 * np.log10(power + 1e-12)  # floor: digital silence is not -inf

        top = power_db(example["mixture"])[2].max()  # one colour scale for every panel, 80 dB deep

        def spectrogram(axis, signal, title):
            frequencies, times, level = power_db(signal)
            axis.pcolormesh(times, frequencies, level, vmin=top - 80, vmax=top, cmap="magma", shading="auto")
            axis.set_title(title, fontsize=9)
            axis.set_ylabel("Hz")

        identifier = example["id"] if len(example["id"]) <= 48 else example["id"][:45] + "..."
        spectrogram(figure.add_subplot(grid[0, :]), example["mixture"], f"mixture ({example['set']}, {identifier})")
        for k in range(n_src):
            spectrogram(figure.add_subplot(grid[1 + k, 0]), example["references"][k], f"reference {k + 1}")
            spectrogram(figure.add_subplot(grid[1 + k, 1]), example["estimates"][k], f"estimate {k + 1} (PIT order)")
    axis = figure.add_subplot(grid[n_rows - 1, :])
    names = [row["variant"] for row in result.rows]
    values = [row["si_sdri"] for row in result.rows]
    colors = ["tab:gray" if n == AVERAGE_ROW else "tab:orange" if n == POOLED_SET else "tab:blue" for n in names]
    bars = axis.bar(names, np.nan_to_num(values), color=colors)
    axis.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=8)
    axis.axhline(0, color="black", linewidth=0.8)
    axis.set_ylabel("SI-SDRi (dB)")
    axis.set_title("SI-SDRi by variant", fontsize=9)
    path = Path(path)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="polsess-evaluate",
        description="Per-variant SI-SDR/SI-SDRi/SDR/PESQ/STOI tables of a separator on PolSESS or Libri2Mix.",
    )
    parser.add_argument("--model", required=True, help="model folder (save_pretrained) or Hub id")
    parser.add_argument("--data-root", required=True, help="PolSESS root (holds train/ val/ test/) or Libri2Mix root")
    parser.add_argument("--dataset", default="auto", choices=("auto", "polsess", "librimix"))
    parser.add_argument("--split", default="test", help="test (default), val or train (Libri2Mix: test, dev, ...)")
    parser.add_argument("--task", choices=("SB", "EB", "ES"), help="default: the model's training config, else SB")
    parser.add_argument("--variants", nargs="+", help=f"PolSESS variants (default all: {' '.join(ALL_VARIANTS)})")
    parser.add_argument("--no-pooled", action="store_true", help=f"skip the pooled {POOLED_SET} row")
    parser.add_argument("--max-samples", type=int, help="first N rows per set (a quick look)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--no-sdr", action="store_true", help="skip BSS-eval SDR")
    parser.add_argument("--no-pesq", action="store_true", help="skip PESQ/PESQi (the slowest metric)")
    parser.add_argument("--no-stoi", action="store_true", help="skip STOI/STOIi")
    parser.add_argument("--convention", default="zero_mean", choices=("zero_mean", "thesis"),
                        help="SI-SDR(i) convention (polsess_hf.metrics)")
    parser.add_argument("--output-dir", default="evaluation_results")
    parser.add_argument("--plot", action="store_true", help="also write evaluation.png")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers reading audio")
    parser.add_argument("--cache-dir", help="🤗 datasets cache for the prepared PolSESS index")
    parser.add_argument("--librimix-mode", default="min", choices=("min", "max"))
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run(args: argparse.Namespace) -> tuple[EvaluationResult, dict[str, Path]]:
    """Evaluate as the parsed command line says; returns the result and the files written."""
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device} was asked for but torch sees no CUDA device; use --device cpu or auto")
    if not args.no_pesq:
        require_pesq()
    if not args.no_stoi:
        require_stoi()
    dataset = detect_dataset(args.data_root) if args.dataset == "auto" else args.dataset
    model = load_separator(args.model, device=device)
    task = resolve_task(model, args.model, args.task)
    sets, skipped = build_evaluation_sets(
        args.data_root, dataset=dataset, split=args.split, task=task, variants=args.variants,
        pooled=not args.no_pooled, max_samples=args.max_samples, sample_rate=int(model.config.sampling_rate),
        cache_dir=args.cache_dir, librimix_mode=args.librimix_mode,
    )
    result = evaluate_separator(
        model, sets, batch_size=args.batch_size, sdr=not args.no_sdr, pesq=not args.no_pesq,
        stoi=not args.no_stoi, convention=args.convention, num_workers=args.num_workers,
        progress=not args.no_progress,
    )
    result.meta.update(
        model=str(args.model), model_type=model.config.model_type,
        num_parameters=sum(p.numel() for p in model.parameters()), dataset=dataset,
        data_root=str(Path(args.data_root).expanduser().resolve()), split=args.split, task=task,
        max_samples=args.max_samples, skipped=skipped,
    )
    return result, write_outputs(result, args.output_dir, plot=args.plot)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``polsess-evaluate --model DIR_OR_HUB_ID --data-root ROOT [options]``; prints the Markdown table."""
    from .metrics import MissingMetricDependency

    args = _parser().parse_args(argv)
    try:
        result, paths = run(args)
    except (FileNotFoundError, ValueError, OSError, MissingMetricDependency) as error:
        raise SystemExit(f"polsess-evaluate: error: {error}") from error
    print(format_markdown(result))
    print("written: " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
