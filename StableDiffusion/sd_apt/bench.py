"""Speed and memory of a DreamBooth training step, APT against the LoRA baseline, at SD v1.5 shapes (random weights).

    python -m sd_apt.bench --device cuda --precision bf16 --steps 20 --json out.json

One step = UNet forward on 2 x 4 x 64 x 64 latents (instance + prior example, 512 px) with random 77 x 768 text states,
epsilon MSE, backward, gradient clipping, AdamW on the method's parameters; the VAE and text encoder are left out
(frozen, no gradient: they cost the same for both methods). Reports steps/s (median of the timed steps after warm-up)
and the peak memory allocated on the device. ``--tiny`` uses the tiny UNet (a CPU smoke run)."""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from .weights import MethodConfig, attach


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_method(method: MethodConfig, device: str, precision: str, steps: int, warmup: int, batch: int,
                 tiny_unet: bool, gradient_checkpointing: bool) -> dict:
    import gc

    from . import tiny
    from .backbone import SD15_UNET_CONFIG

    torch.manual_seed(0)
    if tiny_unet:
        unet, side, cross = tiny.unet(), 16, 32
    else:
        from diffusers import UNet2DConditionModel

        unet, side, cross = UNet2DConditionModel(**SD15_UNET_CONFIG), 64, 768
    unet.to(device)
    text = torch.nn.Module()  # the text encoder is frozen and outside the timed step
    if gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    _, params = attach(method, unet, text)
    for p in params:
        p.data = p.data.float()
    unet.to(device)
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-2)
    dtype = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    x = torch.randn(batch, 4, side, side, device=device)
    states = torch.randn(batch, 77, cross, device=device)
    if device.startswith("cuda"):
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(warmup + steps):
        _sync(device)
        t0 = time.perf_counter()
        t = torch.randint(0, 1000, (batch,), device=device)
        with torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype is not None):
            pred = unet(x, t, states).sample
        loss = F.mse_loss(pred.float(), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else None
    return {"method": method.method, "trainable": sum(p.numel() for p in params),
            "steps_per_s": 1.0 / statistics.median(times), "peak_mem_gib": None if peak is None else peak / 2 ** 30}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sd_apt.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", default="bf16", choices=["fp32", "fp16", "bf16"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=2, help="instance + prior examples per step")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--json", default="")
    a = ap.parse_args(argv)
    rows = [bench_method(m, a.device, a.precision, a.steps, a.warmup, a.batch, a.tiny, a.gradient_checkpointing)
            for m in (MethodConfig("apt", num_prompts=24, rank=4), MethodConfig("lora", rank=4))]
    print(f"| method | trainable | steps/s | peak memory (GiB) |  ({a.device}, {a.precision}, batch {a.batch})")
    print("|---|---|---|---|")
    for r in rows:
        mem = "-" if r["peak_mem_gib"] is None else f"{r['peak_mem_gib']:.2f}"
        print(f"| {r['method']} | {r['trainable']:,} | {r['steps_per_s']:.2f} | {mem} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"settings": vars(a), "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
