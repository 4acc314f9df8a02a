"""CPU training step in fp32 versus bf16 autocast (what ``precision: bf16`` costs or gains on this CPU).

Each model is timed alternately in one process (fp32, bf16, fp32, bf16, ...), so machine load hits both alike; the
table gives medians and the bf16/fp32 time ratio, and the relative difference of the bf16 loss from the fp32 loss on
the same batch and weights. Models: the quickstart Conv-TasNet (configs/quickstart.yaml) and small DPRNN/SepFormer/
SPMamba (2 blocks; SepFormer 1 block of 2+2 layers), batch 4 × 1 s at 8 kHz.

    python benchmarks/bench_precision.py [--repeats 5] [--models convtasnet,dprnn] [--out benchmarks/results/precision.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]

CONFIGS = {
    "convtasnet": {"n_filters": 64, "kernel_size": 32, "bottleneck_channels": 64, "hidden_channels": 128,
                   "n_blocks": 6, "n_repeats": 2},
    "dprnn": {"n_blocks": 2},
    "sepformer": {"n_blocks": 1, "intra_layers": 2, "inter_layers": 2},
    "spmamba": {"num_blocks": 2},
}


def _cpu_flags() -> list[str]:
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return []
    return sorted(f for f in flags if f.startswith(("avx512", "amx")) or f in ("avx2", "fma"))


def _step(model, optimizer, x, y, bf16: bool) -> tuple[float, float]:
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = model(x, labels=y).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start, loss.item()


def bench(model_type: str, repeats: int) -> dict:
    import polsess_hf  # noqa: F401
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.for_model(model_type, **CONFIGS[model_type])
    torch.manual_seed(0)
    model = AutoModel.from_config(config).train()
    # Loss agreement: the same weights and batch, one forward each way.
    x, y = torch.randn(4, 8000), torch.randn(4, 2, 8000)
    with torch.no_grad():
        loss32 = float(model(x, labels=y).loss)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss16 = float(model(x, labels=y).loss)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: every step sees the same weights
    times = {"fp32": [], "bf16": []}
    errors = {}
    for mode in ("fp32", "bf16"):  # warm-up
        try:
            _step(model, optimizer, x, y, mode == "bf16")
        except RuntimeError as error:  # an op without a bf16 CPU kernel
            errors[mode] = str(error).splitlines()[0][:200]
    for _ in range(repeats):
        for mode in ("fp32", "bf16"):
            if mode not in errors:
                times[mode].append(_step(model, optimizer, x, y, mode == "bf16")[0])
    row = {"model": model_type, "parameters": sum(p.numel() for p in model.parameters()),
           "loss_fp32": loss32, "loss_bf16": loss16, "loss_rel_diff": abs(loss16 - loss32) / max(abs(loss32), 1e-8)}
    for mode, values in times.items():
        row[f"{mode}_step_s"] = statistics.median(values) if values else None
    if row["fp32_step_s"] and row["bf16_step_s"]:
        row["bf16_over_fp32"] = row["bf16_step_s"] / row["fp32_step_s"]
    if errors:
        row["errors"] = errors
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(CONFIGS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "precision.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [bench(name, args.repeats) for name in args.models.split(",")]
    print(f"{'model':<11} {'fp32 s/step':>11} {'bf16 s/step':>11} {'bf16/fp32':>9} {'loss diff':>9}")
    for row in rows:
        fmt = lambda v, spec: format(v, spec) if isinstance(v, float) else "error"  # noqa: E731
        print(f"{row['model']:<11} {fmt(row['fp32_step_s'], '11.3f')} {fmt(row['bf16_step_s'], '11.3f')} "
              f"{fmt(row.get('bf16_over_fp32'), '9.2f')} {row['loss_rel_diff']:9.2%}" + (f"  {row['errors']}" if 'errors' in row else ""))
    result = {"machine": {"cpu_flags": _cpu_flags(), "processor": platform.processor(), "threads": args.threads,
                          "torch": torch.__version__, "load_average": os.getloadavg()},
              "command": "python benchmarks/bench_precision.py", "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"load average {os.getloadavg()[0]:.1f}; CPU flags {result['machine']['cpu_flags']}; written {args.out}")


if __name__ == "__main__":
    main()
