"""SAE training throughput against the floor of its own matrix products.

The floor is the same step's bare matrix products, timed in the same run on the same
device and shapes: encoder and decoder forward, and the three backward products
(grad of W_dec, grad of the features, grad of W_enc). A ratio near 1 means the trainer
adds little beyond the unavoidable arithmetic (Adam, norms, top-k, statistics).

    python bench/train.py                          # CPU: d_model 512, 4096 features
    python bench/train.py --d-model 576 --n-features 16384 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from autointerp.sae.config import TrainConfig
from autointerp.sae.train import Trainer


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_once(fn, device: torch.device) -> float:
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def floor_step(x: torch.Tensor, W_enc: torch.Tensor, W_dec: torch.Tensor):
    """The five products of one SAE step, nothing else."""
    def run():
        f = x @ W_enc.T  # (batch, n_features)
        x_hat = f @ W_dec  # (batch, d_model)
        grad_W_dec = f.T @ x_hat  # (n_features, d_model)
        grad_f = x_hat @ W_dec.T  # (batch, n_features)
        grad_W_enc = grad_f.T @ x  # (n_features, d_model)
        return grad_W_dec, grad_W_enc
    return run


def bench(arch: str, d_model: int, n_features: int, batch: int, device: str, reps: int) -> None:
    cfg = TrainConfig(arch=arch, n_features=n_features, n_tokens=batch * 10**6, batch_size=batch)
    trainer = Trainer(d_model, cfg, device)
    dev = trainer.device
    x = torch.randn(batch, d_model, device=dev)
    trainer.init_from(x)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32  # what autocast uses
    xs, W_enc, W_dec = (t.to(dtype) for t in (x, trainer.sae.W_enc.detach(), trainer.sae.decoder.detach()))
    floor, step = floor_step(xs, W_enc, W_dec), lambda: trainer.step(x)
    floor(), step()  # warm-up
    pairs = []
    for _ in range(reps):  # one floor, one step, back to back: drifting load hits both alike
        pairs.append((time_once(floor, dev), time_once(step, dev)))
    t_floor = statistics.median(f for f, _ in pairs)
    t_train = statistics.median(t for _, t in pairs)
    ratio = statistics.median(f / t for f, t in pairs)
    print(f"{arch:5s} {dev.type} d_model {d_model} features {n_features} batch {batch}: "
          f"train {batch / t_train:,.0f} tok/s, matmul floor {batch / t_floor:,.0f} tok/s, "
          f"ratio {ratio:.2f} (median of {reps} paired steps)", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", nargs="+", default=["tied", "relu", "topk"])
    p.add_argument("--d-model", type=int, default=512)
    p.add_argument("--n-features", type=int, default=4096)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--device", default="auto")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for arch in args.arch:
        bench(arch, args.d_model, args.n_features, args.batch_size, args.device, args.reps)


if __name__ == "__main__":
    main()
