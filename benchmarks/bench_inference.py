"""Long-file inference with :func:`polsess_hf.separate` on CPU: speed, memory against length, chunking quality.

Every (model, case) runs in its own Python process, so peak memory is that case's alone. Cases:

* ``speed D`` — D seconds of 16 kHz **stereo** audio (mini-corpus mixtures concatenated and tiled, resampled to
  16 kHz; the right channel a quieter, 17-sample-delayed copy of the left) separated with the default chunking
  (4 s chunks, 1 s overlap, batch 1): wall time, real-time factor (RTF = wall / D) and memory. D = 60 s and 600 s
  (``--quick``: 8 s and 24 s), after a warm-up call on one 4 s chunk (not timed). Memory is sampled every 2 ms:
  ``peak above loaded`` is the peak RSS during warm-up and call minus the RSS just before them, with the model and
  the audio already loaded (i.e. what separating costs beyond the loaded audio). Part of it necessarily grows
  with the length: the O(T) arrays separate() holds (downmixed input, 8 kHz mixture, 8 kHz stitched output, output
  at the input rate) — ``length buffers`` gives their size and ``working`` = peak above loaded − length buffers is
  what must not grow with the length.
* ``quality`` — 60 s (``--quick``: 12 s) of mini-corpus test mixtures (15 rows of 4 s at 8 kHz, the unmodified
  mix, concatenated) separated in one pass and with the default chunking; each 4 s row is scored against its two
  dry speakers (zero-mean SI-SDR, best permutation per row) and the row means are averaged. ``Δ`` = single-pass −
  chunked (positive = what chunking costs). **Needs a trained model** (``--model DIR``); with the randomly
  initialised networks used otherwise, the difference only says how much an untrained network's output changes.

Models: the thesis configurations (ConvTasNet, DPRNN, SepFormer, SPMamba "reduced"), randomly initialised with seed
0, or trained checkpoints given with ``--model DIR`` (their architecture is read from their config and they replace
that architecture's random network). ``--quick`` uses tiny configurations and short inputs to check the script.

    python benchmarks/bench_inference.py                        # everything; hours on 2 cores (SPMamba is slow)
    python benchmarks/bench_inference.py --models convtasnet dprnn --model runs/convtasnet_sb/best
    python benchmarks/bench_inference.py --quick                # tiny sizes, a few minutes (mostly process starts)

Targets (issue 6): peak memory independent of the length (10 min costs no more than 60 s beyond the loaded audio),
ConvTasNet and DPRNN RTF ≤ 0.3 on 2 cores, chunking costing ≤ 0.5 dB SI-SDR versus a single pass.
Prints a table and writes ``benchmarks/results/inference.json`` (``--quick``: ``inference_quick.json``; ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
WORK_DIR = REPO_ROOT / "benchmarks" / "_work" / "inference"
MODELS = ("convtasnet", "dprnn", "sepformer", "spmamba")
INPUT_RATE = 16000
# --quick: tiny widths but the thesis' frame rates (kernel 16 / hop 64), so the sequential parts (RNN steps, scans)
# run as many steps per second of audio as the real networks, and the script still finishes in minutes.
QUICK_CONFIGS = {
    "convtasnet": dict(n_filters=16, bottleneck_channels=16, hidden_channels=32, n_blocks=2, n_repeats=1),
    "dprnn": dict(n_filters=16, kernel_size=16, chunk_size=100, n_blocks=1, hidden_size=8),
    "sepformer": dict(n_filters=16, kernel_size=16, chunk_size=250, n_blocks=1, intra_layers=1, inter_layers=1,
                      d_model=16, n_heads=2, d_ffn=32),
    "spmamba": dict(n_fft=128, hop_length=64, num_blocks=1, emb_dim=4, emb_ks=2, attn_n_head=2, attn_approx_qk_dim=16,
                    d_state=4, expand=2),
}


# ---------------------------------------------------------------------------------------------------------------
# Worker side (one case per process)
# ---------------------------------------------------------------------------------------------------------------
def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak RSS during a ``with`` block, sampled every 2 ms (``peak`` and ``before`` in bytes)."""

    def __enter__(self):
        self.before = self.peak = _rss_bytes()
        self._running = True

        def sample():
            while self._running:
                self.peak = max(self.peak, _rss_bytes())
                time.sleep(0.002)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._running = False
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


def _test_rows(corpus: Path, n_rows: int):
    """``(mixtures (n_rows, T) float32, speakers (n_rows, 2, T) float32)`` of the mini corpus' first test rows."""
    import numpy as np

    from polsess_hf.data import load_polsess

    # SER (indoor) and SE (outdoor) are the unmodified mix files
    dataset = load_polsess(corpus, "test", task="SB", variants=["SER", "SE"], max_samples=n_rows,
                           cache_dir=WORK_DIR / "hf_cache")
    items = [dataset[index] for index in range(n_rows)]
    mixtures = np.stack([item["input_values"].numpy() for item in items]).astype(np.float32)
    speakers = np.stack([item["labels"].numpy() for item in items]).astype(np.float32)
    return mixtures, speakers


def _stereo_16k(mixtures, seconds: float):
    """The 8 kHz rows concatenated, resampled to 16 kHz, tiled to ``seconds``, made stereo: ``(2, T)`` float32."""
    import numpy as np
    from scipy.signal import resample_poly

    base = resample_poly(mixtures.reshape(-1), INPUT_RATE // 8000, 1).astype(np.float32)
    length = int(seconds * INPUT_RATE)
    left = np.resize(base, length)  # np.resize repeats the signal
    right = np.zeros_like(left)
    right[17:] = 0.8 * left[:-17]
    return np.stack([left, right])


def worker(spec: dict) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(spec["threads"])
    from polsess_hf.inference import DEFAULT_CHUNK_SECONDS, load_separator, separate
    from polsess_hf.losses import pit_si_sdr

    model = load_separator(spec["model_dir"])
    n_rows = spec["quality_rows"]
    mixtures, speakers = _test_rows(Path(spec["corpus"]), n_rows)
    result = {"n_params": sum(p.numel() for p in model.parameters()), "model_type": model.config.model_type}
    if spec["case"] == "speed":
        seconds = spec["seconds"]
        audio = _stereo_16k(mixtures, seconds)
        del mixtures, speakers
        n_src, n_in = model.config.n_src, audio.shape[1]
        n_model = int(np.ceil(n_in * model.config.sampling_rate / INPUT_RATE))
        with PeakMemory() as memory:
            separate(model, audio[:, : int(DEFAULT_CHUNK_SECONDS * INPUT_RATE)], INPUT_RATE)  # warm-up: one chunk
            start = time.perf_counter()
            estimates = separate(model, audio, INPUT_RATE)
            wall = time.perf_counter() - start
        assert estimates.shape == (n_src, n_in) and np.isfinite(estimates).all()
        length_buffers = 4 * (n_in + n_model + n_src * n_model + n_src * n_in)  # float32 O(T) arrays, bytes
        result.update({
            "seconds": seconds, "wall_s": wall, "rtf": wall / seconds, "audio_gb": audio.nbytes / 1e9,
            "rss_before_gb": memory.before / 1e9, "peak_rss_gb": memory.peak / 1e9,
            "peak_above_loaded_gb": (memory.peak - memory.before) / 1e9, "length_buffers_gb": length_buffers / 1e9,
            "working_gb": (memory.peak - memory.before - length_buffers) / 1e9,
        })
    else:
        mixture = mixtures.reshape(-1)
        rate = model.config.sampling_rate
        scores = {}
        for name, chunk_seconds in (("single", None), ("chunked", DEFAULT_CHUNK_SECONDS)):
            start = time.perf_counter()
            estimates = separate(model, mixture, 8000, chunk_seconds=chunk_seconds)
            wall = time.perf_counter() - start
            rows = torch.from_numpy(estimates).reshape(model.config.n_src, n_rows, -1).transpose(0, 1)
            per_row, _ = pit_si_sdr(rows, torch.from_numpy(speakers))
            scores[name] = {"si_sdr_db": per_row.mean().item(), "per_row_db": per_row.tolist(), "wall_s": wall}
        result.update({"seconds": mixture.size / 8000, "model_rate": rate, **scores,
                       "delta_db": scores["single"]["si_sdr_db"] - scores["chunked"]["si_sdr_db"]})
    return result


# ---------------------------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------------------------
def prepare_corpus(n_rows: int) -> Path:
    from polsess_hf.data import make_mini_polsess

    corpus = WORK_DIR / "mini_polsess"
    csv = corpus / "test" / "corpus_mini_polsess_test_final.csv"
    if not csv.exists() or sum(1 for _ in open(csv)) - 1 < n_rows:
        make_mini_polsess(corpus, 0, 0, n_rows, seed=0)
    return corpus


def prepare_models(model_types, trained_dirs, quick: bool) -> dict[str, tuple[str, bool]]:
    """``model_type -> (folder, trained)``: trained checkpoints where given, else a seeded random network."""
    import torch
    from transformers import AutoConfig

    import polsess_hf  # noqa: F401
    from polsess_hf.models import MODEL_CLASSES

    trained = {}
    for folder in trained_dirs:
        trained[AutoConfig.from_pretrained(folder).model_type] = folder
    folders = {}
    for model_type in model_types:
        if model_type in trained:
            folders[model_type] = (str(trained[model_type]), True)
            continue
        config_class, model_class = MODEL_CLASSES[model_type]
        config = config_class(**QUICK_CONFIGS[model_type]) if quick else config_class()
        folder = WORK_DIR / ("quick" if quick else "thesis") / model_type
        torch.manual_seed(0)
        model_class(config).save_pretrained(folder)
        folders[model_type] = (str(folder), False)
    return folders


def run_case(spec: dict, timeout: float) -> dict:
    command = [sys.executable, __file__, "--worker", json.dumps(spec)]
    load = os.getloadavg()[0]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode != 0 or not lines:
        tail = " | ".join((completed.stderr or completed.stdout).strip().splitlines()[-3:])
        return {**spec, "error": f"exit {completed.returncode}: {tail}"}
    return {**spec, **json.loads(lines[-1]), "load_avg_1min": round(load, 2)}


def summarize(rows: list[dict], short: float, long: float) -> list[dict]:
    """One line per model: RTF and memory at both lengths, and the chunking quality."""
    table = []
    for model_type in dict.fromkeys(row["model"] for row in rows):
        mine = {(r["case"], r.get("seconds_requested")): r for r in rows if r["model"] == model_type}
        line = {"model": model_type}
        for label, seconds in (("short", short), ("long", long)):
            row = mine.get(("speed", seconds), {})
            line[label] = {key: row.get(key) for key in ("rtf", "wall_s", "peak_above_loaded_gb", "working_gb",
                                                          "length_buffers_gb", "error") if key in row}
        quality = mine.get(("quality", None), {})
        line["quality"] = {key: quality.get(key) for key in ("delta_db", "error") if key in quality}
        if "single" in quality:
            line["quality"].update(single_db=quality["single"]["si_sdr_db"], chunked_db=quality["chunked"]["si_sdr_db"])
        line["trained"] = next((r["trained"] for r in rows if r["model"] == model_type), None)
        table.append(line)
    return table


def format_table(table: list[dict], short: float, long: float) -> str:
    def number(value, fmt):
        return "–" if value is None else format(value, fmt)

    head = (f"| model | trained | RTF {short:g} s | RTF {long:g} s | wall {long:g} s | peak above loaded {short:g} s / "
            f"{long:g} s (GB) | working {short:g} s / {long:g} s (GB) | SI-SDR single / chunked (dB) | Δ (dB) |")
    out = [head, "|---|---|---|---|---|---|---|---|---|"]
    for line in table:
        s, l, q = line["short"], line["long"], line["quality"]
        errors = "; ".join(x["error"][:80] for x in (s, l, q) if x.get("error"))
        out.append(
            f"| {line['model']} | {'yes' if line['trained'] else 'no (random init)'} | {number(s.get('rtf'), '.3f')} | "
            f"{number(l.get('rtf'), '.3f')} | {number(l.get('wall_s'), '.1f')} | "
            f"{number(s.get('peak_above_loaded_gb'), '.3f')} / {number(l.get('peak_above_loaded_gb'), '.3f')} | "
            f"{number(s.get('working_gb'), '.3f')} / {number(l.get('working_gb'), '.3f')} | "
            f"{number(q.get('single_db'), '.2f')} / {number(q.get('chunked_db'), '.2f')} | "
            f"{number(q.get('delta_db'), '+.2f')} |"
            + (f" errors: {errors}" if errors else "")
        )
    return "\n".join(out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--model", nargs="+", default=[], metavar="DIR",
                        help="trained checkpoint folder(s); each replaces the random network of its architecture")
    parser.add_argument("--cases", nargs="+", default=["speed", "quality"], choices=["speed", "quality"])
    parser.add_argument("--seconds", nargs="+", type=float, metavar="S",
                        help="speed-case lengths (default 60 600; one value runs one length, e.g. for slow models)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=7200, help="seconds per case")
    parser.add_argument("--quick", action="store_true", help="tiny models and short inputs, to check the script")
    parser.add_argument("--out", help="default benchmarks/results/inference.json (inference_quick.json with --quick)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))), flush=True)
        return

    args.out = args.out or str(REPO_ROOT / "benchmarks" / "results" / f"inference{'_quick' if args.quick else ''}.json")
    short, long = (8.0, 24.0) if args.quick else (60.0, 600.0)
    if args.seconds:
        short, long = min(args.seconds), max(args.seconds)
    quality_rows = 3 if args.quick else 15  # 12 s / 60 s of 4 s rows
    corpus = prepare_corpus(quality_rows)
    folders = prepare_models(args.models, args.model, args.quick)
    rows = []
    for model_type in args.models:
        folder, trained = folders[model_type]
        common = {"model": model_type, "model_dir": folder, "trained": trained, "threads": args.threads,
                  "corpus": str(corpus), "quality_rows": quality_rows}
        specs = []
        if "speed" in args.cases:
            specs += [{**common, "case": "speed", "seconds": seconds, "seconds_requested": seconds}
                      for seconds in dict.fromkeys((short, long))]
        if "quality" in args.cases:
            specs.append({**common, "case": "quality"})
        for spec in specs:
            row = run_case(spec, args.timeout)
            rows.append(row)
            shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()
                     if k in ("model", "case", "seconds", "rtf", "wall_s", "peak_above_loaded_gb", "working_gb",
                              "delta_db", "error", "load_avg_1min")}
            print(json.dumps(shown), flush=True)
    table = summarize(rows, short, long)
    print()
    print(format_table(table, short, long))
    if any(not row.get("trained") for row in rows if row["case"] == "quality"):
        print("\nnote: SI-SDR rows of untrained (random-init) networks: Δ shows how much chunking changes an untrained "
              "network's output, not the quality cost for a trained one (pass --model DIR).")
    import torch

    from polsess_hf.inference import DEFAULT_CHUNK_SECONDS, DEFAULT_OVERLAP_SECONDS

    meta = {"command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
            "quick": args.quick, "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "threads": args.threads, "python": platform.python_version(), "torch": torch.__version__,
            "chunking": {"chunk_seconds": DEFAULT_CHUNK_SECONDS, "overlap_seconds": DEFAULT_OVERLAP_SECONDS,
                         "batch_size": 1}, "input_rate": INPUT_RATE}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "summary": table, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
