"""SNS vs. plain Sinkhorn time-to-tolerance, and neural-ODE NFE with/without solver-heuristic regularization.

1. Entropic OT between two uniform 2-D point clouds (squared-Euclidean cost, n = 300, ε = 0.002): wall time and
   iterations for log-domain Sinkhorn and for SNS to reach ``‖P1 − a‖₁ + ‖Pᵀ1 − b‖₁ <= 1e-8``; the plans are
   compared entry-wise.
2. A neural ODE ``ẏ = MLP(y)`` (2→32→2, tanh) fit on t ∈ [0, 1] to a radius-modulated rotation of 2-D Gaussian
   points; unregularized vs. global (Pal et al. 2021: Σ Eⱼ|hⱼ| over all steps, our differentiable DP5(4)) and
   local (Pal et al. 2023: one sampled step; the task solve is ``torchdiffeq.odeint``) regularization. NFE is
   counted for ``torchdiffeq.odeint(dopri5, rtol=atol=1e-6)`` on the trained field. Same seeds, data and
   optimizer for every arm. Single-threaded torch for comparable timings.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common_regs.dynamics.global_solver_regularizer import solve_with_heuristics, solver_heuristic_penalty
from common_regs.dynamics.local_solver_regularizer import local_error_penalty, sample_step
from common_regs.ot.sinkhorn import sinkhorn
from common_regs.ot.sinkhorn_newton_sparse import sinkhorn_newton_sparse

logger = logging.getLogger(__name__)

CONFIG: dict[str, Any] = {
    "ot": {"n": 300, "eps": 0.002, "tol": 1e-8, "sinkhorn_iters": 20, "density": 0.05, "seed": 0},
    "node": {"steps": 300, "batch": 64, "lr": 1e-2, "train_tol": 1e-4, "eval_tol": 1e-6, "seed": 0,
             "global_weights": [0.3, 1.0, 3.0, 10.0], "local_weights": [0.3, 1.0, 2.5]},
}


def _bench_ot(cfg: dict[str, Any]) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(cfg["seed"])
    x = torch.rand(cfg["n"], 2, generator=gen, dtype=torch.float64)
    y = torch.rand(cfg["n"], 2, generator=gen, dtype=torch.float64)
    cost = torch.cdist(x, y) ** 2
    w = torch.full((cfg["n"],), 1.0 / cfg["n"], dtype=torch.float64)
    start = time.perf_counter()
    plain = sinkhorn(w, w, cost, cfg["eps"], max_iter=200_000, tol=cfg["tol"])
    t_plain = time.perf_counter() - start
    start = time.perf_counter()
    sns = sinkhorn_newton_sparse(w, w, cost, cfg["eps"], sinkhorn_iters=cfg["sinkhorn_iters"],
                                 density=cfg["density"], tol=cfg["tol"])
    t_sns = time.perf_counter() - start
    return {
        "sinkhorn": {"seconds": t_plain, "iterations": plain.n_iter, "converged": plain.converged},
        "sns": {"seconds": t_sns, "iterations": sns.n_iter, "converged": sns.converged, **sns.extras},
        "time_ratio_sns_over_sinkhorn": t_sns / t_plain,
        "iteration_ratio_sns_over_sinkhorn": sns.n_iter / plain.n_iter,
        "max_plan_difference": float((plain.plan - sns.plan).abs().max()),
    }


def _node_data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(256, 2, generator=gen, dtype=torch.float64)
    radius = x.norm(dim=1, keepdim=True)
    return x, torch.stack([-x[:, 1], x[:, 0]], 1) * (1 + 0.5 * torch.sin(3 * radius))


def _train_node(cfg: dict[str, Any], mode: str, weight: float) -> dict[str, Any]:
    import torchdiffeq

    torch.manual_seed(cfg["seed"])
    field = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 2)).double()

    def func(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return field(y)

    opt = torch.optim.Adam(field.parameters(), lr=cfg["lr"])
    x, target = _node_data()
    gen = torch.Generator().manual_seed(2)
    tol = cfg["train_tol"]
    start = time.perf_counter()
    for _ in range(cfg["steps"]):
        idx = torch.randint(len(x), (cfg["batch"],), generator=gen)
        if mode == "local":
            t_s, h_s, _ = sample_step(func, x[idx], 0.0, 1.0, rtol=tol, atol=tol, generator=gen)
            if t_s > 0.0:
                times = torch.tensor([0.0, t_s, 1.0], dtype=torch.float64)
                traj = torchdiffeq.odeint(func, x[idx], times, rtol=tol, atol=tol, method="dopri5")
                state, end = traj[1], traj[-1]
            else:  # the first step was drawn: its state is the input itself
                times = torch.tensor([0.0, 1.0], dtype=torch.float64)
                state, end = x[idx], torchdiffeq.odeint(func, x[idx], times, rtol=tol, atol=tol, method="dopri5")[-1]
            task = (end - target[idx]).pow(2).mean()
            total = task + weight * local_error_penalty(func, t_s, state, h_s, rtol=tol, atol=tol)
        else:
            y1, stats = solve_with_heuristics(func, x[idx], rtol=tol, atol=tol)
            task = (y1 - target[idx]).pow(2).mean()
            total = task + (weight * solver_heuristic_penalty(stats) if mode == "global" else 0.0)
        opt.zero_grad()
        total.backward()
        opt.step()
    train_seconds = time.perf_counter() - start
    calls = [0]

    def counted(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        return field(y)

    with torch.no_grad():
        start = time.perf_counter()
        pred = torchdiffeq.odeint(counted, x, torch.tensor([0.0, 1.0], dtype=torch.float64), rtol=cfg["eval_tol"],
                                  atol=cfg["eval_tol"], method="dopri5")[-1]
        predict_seconds = time.perf_counter() - start
    return {"mode": mode, "weight": weight, "nfe": calls[0], "mse": float((pred - target).pow(2).mean()),
            "train_seconds": train_seconds, "predict_seconds": predict_seconds}


def _bench_node(cfg: dict[str, Any]) -> dict[str, Any]:
    base = _train_node(cfg, "none", 0.0)
    arms = [_train_node(cfg, "global", w) for w in cfg["global_weights"]]
    arms += [_train_node(cfg, "local", w) for w in cfg["local_weights"]]
    for arm in arms:
        arm["nfe_ratio"] = arm["nfe"] / base["nfe"]
        arm["mse_ratio"] = arm["mse"] / base["mse"]
    return {"baseline": base, "regularized": arms, "paper_nfe_ratio_range": [0.556, 0.733]}


def run(out_dir: Path) -> dict[str, Any]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = {"config": CONFIG, "torch_threads": 1, "ot": _bench_ot(CONFIG["ot"]),
                   "neural_ode": _bench_node(CONFIG["node"])}
    finally:
        torch.set_num_threads(threads)
    logger.info("SNS/Sinkhorn time ratio %.3f", results["ot"]["time_ratio_sns_over_sinkhorn"])
    return results
