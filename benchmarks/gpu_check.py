"""One prepared GPU check (run on a lent CUDA machine; also runs on CPU with --smoke for testing).

* SPMamba: `torch` backend vs `reference` (sequential) backend parity on the GPU; training step (forward, loss,
  backward, Adam) on batch 1 × 4 s and inference on 60 s, fp32 vs bf16 autocast; whether mamba_ssm imports.
* ConvTasNet, DPRNN, SepFormer: training step at the thesis batch sizes (4, 4, 1 × 4 s), fp32 vs bf16 autocast
  (fp16 is the thesis's choice for these; bf16 needs no scaler), plus peak GPU memory.

    PYTHONPATH=. python3 benchmarks/gpu_check.py --out results/gpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

import polsess_hf  # noqa: F401
from polsess_hf.losses import neg_pit_si_sdr_loss
from polsess_hf.models import MODEL_CLASSES


def timed(fn, device, repeats):
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def peak_gb(device):
    return torch.cuda.max_memory_allocated() / 1024**3 if device.type == "cuda" else float("nan")


def train_case(model, batch, seconds, precision, device, repeats, rate=8000):
    model.train()
    x = torch.randn(batch, seconds * rate, device=device)
    labels = torch.randn(batch, model.config.n_src, seconds * rate, device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            estimates = model(x).estimates
        loss = neg_pit_si_sdr_loss(estimates.float(), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        assert torch.isfinite(loss), loss

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    value = timed(step, device, repeats)
    return {"s_per_step": value, "peak_gpu_gb": peak_gb(device)}


def infer_case(model, seconds, precision, device, repeats, rate=8000):
    model.eval()
    x = torch.randn(1, seconds * rate, device=device)

    def run():
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            return model(x).estimates

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    value = timed(run, device, repeats)
    return {"rtf": value / seconds, "peak_gpu_gb": peak_gb(device)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for a CPU test of the script")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    repeats = 1 if args.smoke else 5
    seconds, long_seconds = (1, 2) if args.smoke else (4, 60)
    report = {"torch": torch.__version__, "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor(),
              "rows": []}
    try:
        import mamba_ssm  # noqa: F401

        report["mamba_ssm"] = getattr(mamba_ssm, "__version__", "imported")
    except Exception as error:  # noqa: BLE001 - any failure means "not usable here"
        report["mamba_ssm"] = f"not available: {type(error).__name__}: {error}"[:200]
    print("mamba_ssm:", report["mamba_ssm"], flush=True)

    # SPMamba parity of the chunked scan against the sequential reference, on the GPU
    spmamba_config, spmamba_class = MODEL_CLASSES["spmamba"]
    torch.manual_seed(0)
    model = spmamba_class(spmamba_config(mamba_backend="torch")).to(device).eval()
    x = torch.randn(1, 2000, device=device)
    with torch.no_grad():
        fast = model(x).estimates
        model.set_mamba_backend("reference")
        reference = model(x).estimates
    rel = ((fast - reference).abs().max() / reference.abs().max()).item()
    report["spmamba_torch_vs_reference_rel_err"] = rel
    print(f"spmamba torch vs reference max rel err: {rel:.2e}", flush=True)

    for model_type, batch in (("spmamba", 1), ("convtasnet", 4), ("dprnn", 4), ("sepformer", 1)):
        config_class, model_class = MODEL_CLASSES[model_type]
        extra = {"mamba_backend": "torch"} if model_type == "spmamba" else {}
        for precision in ("fp32", "bf16"):
            torch.manual_seed(0)
            model = model_class(config_class(**extra)).to(device)
            row = {"model": model_type, "precision": precision, "batch": batch}
            try:
                row["train"] = train_case(model, batch, seconds, precision, device, repeats)
                row["infer4"] = infer_case(model, seconds, precision, device, repeats)
                row["infer_long"] = infer_case(model, long_seconds, precision, device, max(1, repeats // 2))
            except Exception as error:  # noqa: BLE001 - record and go on with the other rows
                row["error"] = f"{type(error).__name__}: {error}"[:300]
            report["rows"].append(row)
            print(json.dumps(row), flush=True)
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=2)
    print("| model | precision | train s/step | train peak GB | RTF 4 s | RTF long | long peak GB |")
    for row in report["rows"]:
        if "error" in row:
            print(f"| {row['model']} | {row['precision']} | error: {row['error'][:60]} |")
            continue
        print(f"| {row['model']} | {row['precision']} | {row['train']['s_per_step']:.4f} | {row['train']['peak_gpu_gb']:.2f} | "
              f"{row['infer4']['rtf']:.5f} | {row['infer_long']['rtf']:.5f} | {row['infer_long']['peak_gpu_gb']:.2f} |")


if __name__ == "__main__":
    main()
