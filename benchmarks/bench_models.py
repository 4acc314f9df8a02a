"""Speed and memory of the polsess_hf separators next to the thesis networks (SpeechBrain) and asteroid.

Every (model, implementation, case) runs in its own Python process so that peak RSS is that case's alone.
Ours and the SpeechBrain reference carry identical weights (converted with the checkpoint converter); asteroid's
networks have the same sizes but their own initialisation (their structure differs, so weights cannot be mapped).

Cases:
  train    one optimisation step: forward, PIT SI-SDR loss, backward, Adam step; batch 4 × 4 s at 8 kHz
           (batch 1 for SepFormer and SPMamba). Median of --repeats steps after one warm-up step.
  infer4   inference real-time factor (seconds of compute per second of audio) on 4 s, batch 1.
  infer60  inference real-time factor on 60 s, batch 1 (one warm-up on 4 s first).

    python benchmarks/bench_models.py                                  # everything (long: ~30 min on 2 cores)
    python benchmarks/bench_models.py --models dprnn --cases train infer4
    python benchmarks/bench_models.py --models convtasnet --impls ours --precision bf16

Prints a table and writes JSON (default benchmarks/results/models.json). The reference implementations come from
tests/reference_*.py (speechbrain imported with a torchaudio stand-in; asteroid installed by `make bench-deps`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
WORK_DIR = REPO_ROOT / "benchmarks" / "_work"
SAMPLE_RATE = 8000
BATCH = {"convtasnet": 4, "dprnn": 4, "sepformer": 1, "spmamba": 1}
MODELS = ("convtasnet", "dprnn", "sepformer")
IMPLS = ("ours", "speechbrain", "asteroid")
CASES = ("train", "infer4", "infer60")
# reference builders: tests/reference_<module>.py :: build_<impl>_<model>(config)
REFERENCE_MODULE = {"convtasnet": "reference_convtasnet", "dprnn": "reference_dual_path", "sepformer": "reference_dual_path"}


def _reference_builder(model_type: str, impl: str):
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    import importlib

    module = importlib.import_module(REFERENCE_MODULE[model_type])
    name = f"build_{impl}_{model_type}"
    if not hasattr(module, name):
        return None
    return getattr(module, name)


def _config(model_type: str):
    import polsess_hf  # noqa: F401
    from polsess_hf.models import MODEL_CLASSES

    config_class, _ = MODEL_CLASSES[model_type]
    return config_class()


def prepare(model_type: str) -> None:
    """Build the SpeechBrain reference with a fixed seed and write it, and ours with identical weights, to WORK_DIR."""
    import importlib

    import torch

    from polsess_hf.models import MODEL_CLASSES

    config = _config(model_type)
    build = _reference_builder(model_type, "speechbrain")
    torch.manual_seed(0)
    reference = build(config)
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    torch.save(reference.state_dict(), WORK_DIR / f"{model_type}_speechbrain.pt")
    converter = importlib.import_module(f"polsess_hf.models.{model_type}.convert_{model_type}")
    model = MODEL_CLASSES[model_type][1](config)
    model.load_state_dict(converter.convert_state_dict(reference.state_dict(), config), strict=True)
    model.save_pretrained(WORK_DIR / f"{model_type}_ours")


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # ru_maxrss is KiB on Linux


def worker(model_type: str, impl: str, case: str, repeats: int, precision: str, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from polsess_hf.losses import neg_pit_si_sdr_loss

    config = _config(model_type)
    if impl == "ours":
        from transformers import AutoModel

        model = AutoModel.from_pretrained(WORK_DIR / f"{model_type}_ours")

        def run(x):
            return model(x).estimates

    else:
        build = _reference_builder(model_type, impl)
        if build is None:
            raise SystemExit(f"no {impl} reference for {model_type}")
        torch.manual_seed(0)
        model = build(config)
        state = WORK_DIR / f"{model_type}_{impl}.pt"
        if state.exists():
            model.load_state_dict(torch.load(state))

        def run(x):
            out = model(x)
            return out if out.dim() == 3 else out.unsqueeze(1)

    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    rss_loaded = _peak_rss_gb()
    torch.manual_seed(1)
    times = []
    if case == "train":
        model.train()
        batch = BATCH[model_type]
        x = torch.randn(batch, 4 * SAMPLE_RATE)
        labels = torch.randn(batch, config.n_src, 4 * SAMPLE_RATE)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        for step in range(repeats + 1):
            start = time.perf_counter()
            with autocast:
                estimates = run(x)
                length = min(estimates.shape[-1], labels.shape[-1])
                loss = neg_pit_si_sdr_loss(estimates[..., :length].float(), labels[..., :length])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step > 0:
                times.append(time.perf_counter() - start)
        value = statistics.median(times)
        unit = "s/step"
    else:
        model.eval()
        seconds = 4 if case == "infer4" else 60
        x = torch.randn(1, seconds * SAMPLE_RATE)
        with torch.inference_mode(), autocast:
            run(torch.randn(1, 4 * SAMPLE_RATE))  # warm-up
            for _ in range(repeats if case == "infer4" else 1):
                start = time.perf_counter()
                run(x)
                times.append(time.perf_counter() - start)
        value = statistics.median(times) / seconds
        unit = "RTF"
    return {
        "model": model_type, "impl": impl, "case": case, "precision": precision, "value": value, "unit": unit,
        "times_s": times, "peak_rss_gb": _peak_rss_gb(), "rss_after_load_gb": rss_loaded,
        "n_params": sum(p.numel() for p in model.parameters()),
    }


def _total_ram_gb() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def run_case(model_type, impl, case, repeats, precision, threads, timeout) -> dict:
    command = [sys.executable, __file__, "--worker", model_type, impl, case, "--repeats", str(repeats),
               "--precision", precision, "--threads", str(threads)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"model": model_type, "impl": impl, "case": case, "precision": precision, "error": f"timeout after {timeout} s"}
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        if result.returncode < 0:  # killed by a signal: SIGKILL without a traceback is the kernel's OOM killer
            reason = "out of memory (SIGKILL from the OOM killer)" if result.returncode == -9 else "killed"
            tail.append(f"{reason}: signal {-result.returncode}, machine RAM {_total_ram_gb():.0f} GB")
        return {"model": model_type, "impl": impl, "case": case, "precision": precision, "error": " | ".join(tail)}
    return json.loads(lines[-1])


def format_table(rows: list[dict]) -> str:
    out = ["| model | case | impl | precision | value | peak RSS GB | ours speed-up (ref/ours) | ours memory ratio |",
           "|---|---|---|---|---|---|---|---|"]
    ours = {(r["model"], r["case"], r["precision"]): r for r in rows if r["impl"] == "ours" and "error" not in r}
    for r in rows:
        if "error" in r:
            out.append(f"| {r['model']} | {r['case']} | {r['impl']} | {r['precision']} | error: {r['error'][:80]} | | | |")
            continue
        mine = ours.get((r["model"], r["case"], "fp32")) if r["impl"] != "ours" else None
        speed = f"{r['value'] / mine['value']:.2f}×" if mine else ""
        memory = f"{mine['peak_rss_gb'] / r['peak_rss_gb']:.2f}" if mine else ""
        out.append(f"| {r['model']} | {r['case']} | {r['impl']} | {r['precision']} | {r['value']:.3f} {r['unit']} | "
                   f"{r['peak_rss_gb']:.2f} | {speed} | {memory} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"],
                        help="bf16 = CPU autocast; applied to ours only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per case")
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "models.json"))
    parser.add_argument("--worker", nargs=3, metavar=("MODEL", "IMPL", "CASE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.repeats, args.precision[0], args.threads)))
        return
    rows = []
    for model_type in args.models:
        prepare(model_type)
        for case in args.cases:
            for impl in args.impls:
                for precision in args.precision if impl == "ours" else ["fp32"]:
                    row = run_case(model_type, impl, case, args.repeats, precision, args.threads, args.timeout)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    table = format_table(rows)
    print(table)
    meta = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "machine": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "threads": args.threads, "python": platform.python_version()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
