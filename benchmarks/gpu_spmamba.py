"""SPMamba on a GPU: the pure-PyTorch ``torch`` backend in fp32 vs bf16 autocast, parity with the ``reference``
backend, and (when it imports) parity with mamba-ssm's CUDA kernels. Self-contained: one short run.

What it measures (reduced = thesis SB model, batch 1):

* training step (forward with PIT loss + backward) on 4 s, ``torch`` backend, fp32 and bf16 autocast;
* inference on 60 s, ``torch`` backend, fp32 and bf16 autocast (RTF and peak GPU memory);
* parity on a short input: scan outputs/gradients ``torch`` vs ``reference``; whole model ``torch`` vs ``reference``;
  if ``import mamba_ssm`` works, the same against its ``selective_scan_fn`` (``mamba_backend="auto"``) and its
  fp32/bf16 timings too. Whether mamba_ssm imported (and why not) is recorded.

Usage::

    python benchmarks/gpu_spmamba.py --out /tmp/out/gpu_spmamba.json        # on the GPU machine (~2-4 min)
    python benchmarks/gpu_spmamba.py --smoke --out /tmp/gpu_smoke.json       # tiny sizes; runs on CPU too

Prints a table and writes the JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

SAMPLE_RATE = 8000


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, device, repeats: int) -> dict:
    """Warm-up once, then ``repeats`` timed calls; min/median seconds and peak memory (GPU: allocator peak)."""
    fn()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    result = {"min_s": min(times), "median_s": sorted(times)[len(times) // 2], "times_s": times}
    if device.type == "cuda":
        result["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


def mamba_ssm_status() -> dict:
    try:
        import mamba_ssm  # noqa: F401
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn  # noqa: F401
    except Exception as error:  # noqa: BLE001 - any failure means "not available"
        return {"available": False, "error": f"{type(error).__name__}: {error}"}
    return {"available": True, "version": getattr(sys.modules["mamba_ssm"], "__version__", "?")}


def scan_parity(device, backends: list[str]) -> dict:
    from polsess_hf.models.spmamba.mamba_mixer import selective_scan

    generator = torch.Generator().manual_seed(0)
    batch, length, d_inner, d_state = 4, 300, 256, 16

    def randn(*shape):
        return torch.randn(*shape, generator=generator).to(device)

    inputs = dict(u=randn(batch, length, d_inner), delta=randn(batch, length, d_inner) * 0.5 - 3,
                  A=-torch.exp(torch.log(torch.arange(1, d_state + 1.0)) + 0.3 * torch.randn(d_inner, d_state, generator=generator)).to(device),
                  B=randn(batch, length, d_state), C=randn(batch, length, d_state), D=randn(d_inner),
                  z=randn(batch, length, d_inner), delta_bias=0.3 * randn(d_inner))  # fmt: skip
    outputs = {}
    grad_output = randn(batch, length, d_inner)
    for backend in backends:
        leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
        out = selective_scan(**leaves, backend=backend)
        grads = torch.autograd.grad(out, list(leaves.values()), grad_output)
        outputs[backend] = (out.detach(), dict(zip(leaves, grads)))
    reference_out, reference_grads = outputs["reference"]
    report = {}
    for backend in backends:
        if backend == "reference":
            continue
        out, grads = outputs[backend]
        errors = {"output": _relative(out, reference_out)}
        errors.update({f"d{k}": _relative(grads[k], reference_grads[k]) for k in grads})
        report[backend] = {"max_relative_error": max(errors.values()), "errors": errors}
    return report


def model_parity(device, backends: list[str], samples: int) -> dict:
    from polsess_hf.models.spmamba import SPMambaConfig, SPMambaModel

    torch.manual_seed(0)
    model = SPMambaModel(SPMambaConfig(mamba_backend="reference")).to(device).eval()
    x = torch.randn(1, samples, device=device)
    estimates = {}
    with torch.no_grad():
        for backend in backends:
            model.set_mamba_backend(backend)
            estimates[backend] = model(x).estimates
    return {backend: {"max_relative_error": _relative(estimates[backend], estimates["reference"])}
            for backend in backends if backend != "reference"}  # fmt: skip


def timings(device, backend: str, train_seconds: float, infer_seconds: float, repeats: int) -> dict:
    from polsess_hf.models.spmamba import SPMambaConfig, SPMambaModel

    torch.manual_seed(0)
    model = SPMambaModel(SPMambaConfig(mamba_backend=backend)).to(device)
    results = {}
    train_samples = int(train_seconds * SAMPLE_RATE)
    x, labels = torch.randn(1, train_samples, device=device), torch.randn(1, 2, train_samples, device=device)
    long_x = torch.randn(1, int(infer_seconds * SAMPLE_RATE), device=device)
    for precision in ("fp32", "bf16"):
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

        def train_step():
            model.train()
            model.zero_grad(set_to_none=True)
            with autocast:
                out = model(x, labels=labels)
            out.loss.backward()

        def infer():
            model.eval()
            with torch.no_grad(), autocast:
                model(long_x)

        train = _time(train_step, device, repeats)
        train["audio_s"] = train_seconds
        inference = _time(infer, device, max(1, repeats // 2))
        inference["audio_s"] = infer_seconds
        inference["rtf"] = inference["min_s"] / infer_seconds
        results[precision] = {"train_step": train, "inference": inference}
    results["bf16_speedup"] = {
        "train_step": results["fp32"]["train_step"]["min_s"] / results["bf16"]["train_step"]["min_s"],
        "inference": results["fp32"]["inference"]["min_s"] / results["bf16"]["inference"]["min_s"],
    }
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (also runs on CPU)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(1)  # a functional check here (--smoke), not a measurement
    train_seconds, infer_seconds, parity_samples = (0.25, 1.0, 1000) if args.smoke else (4.0, 60.0, 4000)
    repeats = 1 if args.smoke else args.repeats
    report = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "smoke": args.smoke,
        "mamba_ssm": mamba_ssm_status(),
    }
    backends = ["reference", "torch"] + (["auto"] if report["mamba_ssm"]["available"] and device.type == "cuda" else [])
    steps = [
        ("scan_parity", lambda: scan_parity(device, backends)),
        ("model_parity", lambda: model_parity(device, backends, parity_samples)),
        ("torch_backend", lambda: timings(device, "torch", train_seconds, infer_seconds, repeats)),
    ]
    if "auto" in backends:
        steps.append(("mamba_ssm_backend", lambda: timings(device, "auto", train_seconds, infer_seconds, repeats)))
    for name, step in steps:
        start = time.perf_counter()
        try:
            report[name] = step()
        except Exception as error:  # noqa: BLE001 - record and go on: one failure must not lose the other numbers
            report[name] = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()[-2000:]}
        report[name + "_wall_s"] = round(time.perf_counter() - start, 1)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        if device.type == "cuda":
            torch.cuda.empty_cache()
    _print(report)


def _peak(values: dict) -> str:
    return f" peak {values['peak_gpu_gb']:.2f} GB" if "peak_gpu_gb" in values else ""


def _print(report: dict) -> None:
    print(f"device: {report['device']}  torch {report['torch']}  cuda {report['cuda']}  smoke={report['smoke']}")
    status = report["mamba_ssm"]
    print("mamba_ssm:", f"available ({status.get('version')})" if status["available"] else f"not available — {status['error']}")
    for name in ("scan_parity", "model_parity"):
        for backend, values in report[name].items():
            if backend == "error":
                print(f"{name}: ERROR {values}")
            elif backend != "traceback":
                print(f"{name:<13} {backend:<6} vs reference: max relative error {values['max_relative_error']:.2e}")
    for name in ("torch_backend", "mamba_ssm_backend"):
        if name not in report:
            continue
        values = report[name]
        if "error" in values:
            print(f"{name}: ERROR {values['error']}")
            continue
        for precision in ("fp32", "bf16"):
            train, infer = values[precision]["train_step"], values[precision]["inference"]
            print(f"{name:<17} {precision}: train step ({train['audio_s']:g} s) {train['min_s'] * 1e3:8.1f} ms{_peak(train)} | "
                  f"inference ({infer['audio_s']:g} s) {infer['min_s']:.3f} s RTF {infer['rtf']:.4f}{_peak(infer)}")  # fmt: skip
        print(f"{name:<17} bf16 speed-up: train ×{values['bf16_speedup']['train_step']:.2f}, inference ×{values['bf16_speedup']['inference']:.2f}")


if __name__ == "__main__":
    main()
