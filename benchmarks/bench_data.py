"""Data-loading speed of the PolSESS layer versus how fast a model consumes items.

Measures, on a generated mini corpus of ``--rows`` training rows (≥ 2,000):

1. corpus generation and index preparation times;
2. a **16K-row index**: the 2,000 rows repeated to 16,000 (duplicates kept, as in the C_both pilot corpus),
   prepared once, then the time to load the prepared index (``load_polsess`` from a warm cache);
3. **SB training items/s** through a ``DataLoader`` (batch 8, shuffled, ``collate_separation``) with 0, 1 and 2
   workers, for the curriculum's final stage (all seven non-clean variants) and for C (the most stems per
   item). Files were just written, so the page cache is warm (the usual steady state after the first epoch);
4. the **consumption rate** of the thesis models at their default (thesis) sizes: forward + backward + Adam
   step on 4 s items, batch ``--model-batch`` on CPU (2 threads), batch 8 on CUDA if present; the models
   registered in ``polsess_hf.models.MODEL_CLASSES`` that build.

Prints a table and writes ``benchmarks/results/data.json``. Usage::

    python benchmarks/bench_data.py                      # 2,000 rows, work files in benchmarks/_work/
    python benchmarks/bench_data.py --rows 2000 --gen-workers 8 --skip-models
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from polsess_hf.data import collate_separation, load_polsess, make_mini_polsess  # noqa: E402

FINAL_STAGE = ["R", "SR", "S", "SE", "ER", "E", "SER"]
SAMPLES = 32000


def _ensure_corpus(root: Path, rows: int, workers: int) -> float:
    csv = root / "train" / f"corpus_{root.name}_train_final.csv"
    if csv.is_file() and sum(1 for _ in open(csv)) - 1 == rows:
        return float("nan")  # reused from an earlier run
    shutil.rmtree(root, ignore_errors=True)
    start = time.perf_counter()
    make_mini_polsess(root, rows, 16, 0, seed=0, num_workers=workers)
    return time.perf_counter() - start


def _make_16k(source: Path, target: Path, rows: int = 16_000) -> None:
    """A 16,000-row corpus whose CSV repeats the source's train rows; audio folders are symlinks."""
    shutil.rmtree(target, ignore_errors=True)
    (target / "train").mkdir(parents=True)
    for folder in ("mix", "clean", "scene", "event", "sp1_reverb", "sp2_reverb", "ev_reverb"):
        os.symlink(source / "train" / folder, target / "train" / folder)
    lines = open(source / "train" / f"corpus_{source.name}_train_final.csv").read().splitlines()
    header, body = lines[0], lines[1:]
    with open(target / "train" / f"corpus_{target.name}_train_final.csv", "w") as handle:
        handle.write("\n".join([header] + [body[i % len(body)] for i in range(rows)]) + "\n")


def _loader_rate(dataset, workers: int, max_items: int) -> tuple[float, float, float]:
    """``(items per wall second, items per CPU second, items per worker CPU second)`` of a DataLoader pass.

    The CPU figures count user + system time over the timed batches: of the main process and its workers
    together, and of the workers alone (with 0 workers: the main process). On a busy, shared machine the wall
    clock says how much CPU the loader got; the last figure says what one worker with a core of its own delivers.
    """
    import psutil

    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=8,
        shuffle=True,
        num_workers=workers,
        collate_fn=collate_separation,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers else None,
        generator=torch.Generator().manual_seed(0),
    )

    def cpu_seconds() -> tuple[float, float]:
        me = psutil.Process()
        totals = []
        for processes in ([me] + me.children(recursive=True), me.children(recursive=True) or [me]):
            total = 0.0
            for process in processes:
                try:
                    times = process.cpu_times()
                    total += times.user + times.system
                except psutil.Error:
                    pass
            totals.append(total)
        return totals[0], totals[1]

    iterator = iter(loader)
    next(iterator)  # worker start-up and first batch excluded
    start, (cpu_start, worker_start), items = time.perf_counter(), cpu_seconds(), 0
    for batch in iterator:
        items += batch["input_values"].shape[0]
        if items >= max_items:
            break
    wall = time.perf_counter() - start
    cpu_end, worker_end = cpu_seconds()
    del iterator
    return items / wall, items / (cpu_end - cpu_start), items / (worker_end - worker_start)


def _model_rates(device: str, batch: int, steps: int) -> dict[str, float]:
    """Training items/s (forward + backward + Adam step) of the registered thesis models at their defaults."""
    rates: dict[str, float] = {}
    try:
        from polsess_hf.models import MODEL_CLASSES
    except Exception as error:  # the data layer must be benchmarkable while the models are in flux
        print(f"  (no models: {error})")
        return rates
    names = ["convtasnet", "dprnn"] + (["sepformer", "spmamba"] if device == "cuda" else [])
    for name in names:
        if name not in MODEL_CLASSES:
            continue
        try:
            config_class, model_class = MODEL_CLASSES[name]
            model = model_class(config_class()).to(device).train()
            optimizer = torch.optim.Adam(model.parameters(), 1e-3)
            inputs = torch.randn(batch, SAMPLES, device=device) * 0.1
            labels = torch.randn(batch, 2, SAMPLES, device=device) * 0.1

            def step():
                loss = model(input_values=inputs, labels=labels).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

            step()  # warm-up (allocations, cuDNN autotune)
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(steps):
                step()
            if device == "cuda":
                torch.cuda.synchronize()
            rates[name] = batch * steps / (time.perf_counter() - start)
            print(f"  model {name} on {device}: {rates[name]:.2f} items/s", flush=True)
            del model, optimizer
            if device == "cuda":
                torch.cuda.empty_cache()
        except Exception as error:
            print(f"  ({name} on {device} skipped: {type(error).__name__}: {str(error)[:120]})")
    return rates


def _save(results: dict, path: str) -> None:
    output = Path(path)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2000, help="training rows of the generated corpus (≥ 2000)")
    parser.add_argument("--work-dir", default=str(REPO / "benchmarks" / "_work"))
    parser.add_argument("--gen-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--items", type=int, default=1200, help="items timed per loader measurement")
    parser.add_argument("--model-batch", type=int, default=2, help="batch of 4 s items for the model timing")
    parser.add_argument("--model-steps", type=int, default=2, help="timed training steps per model")
    parser.add_argument("--skip-models", action="store_true")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "data.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    import datasets

    datasets.disable_progress_bars()
    work = Path(args.work_dir)
    cache = work / "hf_cache"
    corpus = work / "bench_polsess"
    results: dict = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "rows": args.rows,
    }  # fmt: skip

    generate_s = _ensure_corpus(corpus, args.rows, args.gen_workers)
    results["generate_s"] = None if np.isnan(generate_s) else generate_s
    print(f"corpus ready (generated in {generate_s:.1f} s; nan = reused from an earlier run)", flush=True)
    shutil.rmtree(cache, ignore_errors=True)
    start = time.perf_counter()
    train = load_polsess(corpus, "train", variants=FINAL_STAGE, cache_dir=cache)
    results["prepare_index_s"] = time.perf_counter() - start

    big = work / "bench_polsess_16k"
    _make_16k(corpus, big)
    start = time.perf_counter()
    load_polsess(big, "train", cache_dir=cache)
    results["prepare_16k_index_s"] = time.perf_counter() - start
    start = time.perf_counter()
    big_dataset = load_polsess(big, "train", curriculum="standard", cache_dir=cache)
    results["load_16k_index_s"] = time.perf_counter() - start
    assert len(big_dataset) == 16_000
    print(
        f"16K index: prepare {results['prepare_16k_index_s']:.2f} s, load {results['load_16k_index_s']:.2f} s",
        flush=True,
    )
    _save(results, args.output)

    rates: dict[str, dict[str, float]] = {}
    clean = load_polsess(corpus, "train", variants=["C"], cache_dir=cache)
    for label, dataset in (("final_stage", train), ("C", clean)):
        rates[label] = {}
        for workers in (0, 1, 2):
            wall_rate, cpu_rate, worker_rate = _loader_rate(dataset, workers, args.items)
            rates[label][f"workers_{workers}"] = wall_rate
            rates[label][f"workers_{workers}_per_cpu_second"] = cpu_rate
            rates[label][f"workers_{workers}_per_worker_cpu_second"] = worker_rate
            print(
                f"  {label}, {workers} workers: {wall_rate:.0f} items/s (wall), {cpu_rate:.0f} per CPU-second, "
                f"{worker_rate:.0f} per worker CPU-second",
                flush=True,
            )
    results["sb_items_per_s"] = rates
    # Per-item cost in the main process, without DataLoader overhead (a lower bound on one worker's cost).
    start, cpu_start = time.perf_counter(), time.process_time()
    for index in range(min(400, len(train))):
        train[index]
    results["getitem_ms_final_stage"] = 1000 * (time.perf_counter() - start) / min(400, len(train))
    results["getitem_cpu_ms_final_stage"] = 1000 * (time.process_time() - cpu_start) / min(400, len(train))
    _save(results, args.output)

    if not args.skip_models:
        results["model_batch"] = args.model_batch
        results["model_items_per_s"] = {"cpu_2_threads": _model_rates("cpu", args.model_batch, args.model_steps)}
        if torch.cuda.is_available():
            results["model_items_per_s"]["cuda"] = _model_rates("cuda", 8, 10)

    print(f"\nmachine: {results['machine']}")
    print(f"corpus: {args.rows} train rows; generated in {generate_s:.1f} s; index prepared in "
          f"{results['prepare_index_s']:.2f} s")  # fmt: skip
    print(
        f"16K-row index: prepare {results['prepare_16k_index_s']:.2f} s, "
        f"load prepared {results['load_16k_index_s']:.2f} s"
    )
    print(f"__getitem__ (final stage, main process): {results['getitem_ms_final_stage']:.2f} ms/item wall, "
          f"{results['getitem_cpu_ms_final_stage']:.2f} ms/item CPU")  # fmt: skip
    print("\nSB training items/s (batch 8)                0 workers   1 worker   2 workers")
    for label, row in rates.items():
        measures = (("", "wall"), ("_per_cpu_second", "per CPU-s"), ("_per_worker_cpu_second", "per worker CPU-s"))
        for suffix, name in measures:
            values = [row[f"workers_{w}{suffix}"] for w in (0, 1, 2)]
            print(f"  {label + ', ' + name:<42}{values[0]:>10.0f}{values[1]:>11.0f}{values[2]:>12.0f}")
    for device, models in results.get("model_items_per_s", {}).items():
        for name, rate in models.items():
            print(f"model consumption ({device}) {name:<12} {rate:>10.3f} items/s")
    _save(results, args.output)
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
