"""Small real demonstrations of seven generative and structure methods (RED-diff, bad-noise minimax, MEE, GIFD, OReX,
SDL, DGNO weak form). All CPU, single-threaded torch, seeds in ``CONFIG``; data: ``sklearn.datasets.load_digits``
(8×8 digits, bundled with scikit-learn) or synthetic toys.

1. RED-diff (#38): inpaint 100 test digits (50 % pixels observed, σ_y = 0.05) with an exact Gaussian-prior denoiser
   fitted on 1,500 training digits; PSNR of RED-diff (official defaults, 1000-step linear-β schedule) vs. the
   closed-form posterior mean under the same prior, the prior-mean fill and the zero fill.
2. Bad-noise minimax (#59): a conditional rectified-flow MLP fills a random 4×4 hole ("object") in digits; plain
   flow matching vs. the minimax loss (ρ = 0.5, one ascent step); hole MSE of 6-step Euler sampling (mean and worst of
   8 noises) and the flow loss under random vs. adversarial (5-step) noise.
3. MEE (#11): 2-D GAN on a ring of 8 Gaussians, with and without the entropy term on the discriminator's 8-d codes
   (generator side, η ramped over 1000 steps); modes covered (> 2 % of 4,000 samples within 0.3) and quality.
4. GIFD (#26): gradients of one digit through a small MLP classifier; pixel-space, latent-only and GIFD
   (latent → two feature stages, ℓ1 radius 4) attacks with the decoder of an autoencoder trained on digits as the
   generator; no defense vs. 90 % gradient pruning vs. Gaussian noise (σ = 0.01); reconstruction MSE.
5. OReX (#27): a Fourier-feature field fitted to in/out labels on 5 line slices of a 2-D trefoil, λ ∈ {0, 0.01, 0.1},
   α = 10; the hinge quantity and the largest ‖∇ₓf‖ at the training points, IoU of the 0-level set with the shape.
6. SDL (#67): one-vs-rest digit detection with r = 2 atoms; PCA(2) + logistic regression vs. filter-SDL at
   ξ ∈ {1, 0.1, 0.01}; test AUC and relative reconstruction error.
7. DGNO weak form (#54): label-free fit of −Δu = 2π² sin(πx)sin(πy) on the unit square (hard zero boundary) from
   the weak-form residual vs. a strong-form (collocation) residual with the same network and steps; relative L2 error
   and time ratio. Plus the weak residual of the exact solution of a 1-D problem with a discontinuous coefficient.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common_regs.generative.bad_noise_minimax import BadNoiseMinimax, bad_noise, flow_matching_loss
from common_regs.generative.gifd_attack import GIFDAttack, noisy_gradients, prune_gradients
from common_regs.generative.manifold_entropy import ManifoldEntropy
from common_regs.generative.orex_gradient_hinge import (
    FourierFeatureField,
    OReXGradientHinge,
    input_gradient_hinge,
    iterative_bce,
)
from common_regs.generative.red_diff import REDDiff, gaussian_prior_eps
from common_regs.structure.supervised_dictionary_learning import SupervisedDictionaryLearning
from common_regs.structure.weak_form_residual import WeakFormResidual, weak_form_residuals

logger = logging.getLogger(__name__)

CONFIG: dict[str, Any] = {
    "red_diff": {"n_train": 1500, "n_test": 100, "observed": 0.5, "sigma_y": 0.05, "steps": 1000, "seed": 0},
    "bad_noise": {"train_steps": 1500, "batch": 128, "lr": 1e-3, "step_size": 0.1, "adversarial_fraction": 0.5,
                  "sample_steps": 6, "seeds": [0, 1]},
    "mee": {"steps": 2000, "eta": 0.01, "buffer": 1024, "seeds": [0, 1]},
    "gifd": {"digits": 4, "steps_latent": 600, "steps_gifd": [300, 150, 150], "radius": 4.0, "prune": 0.9,
             "noise_std": 0.01, "seed": 0},
    "orex": {"steps": 400, "alpha": 10.0, "weights": [0.0, 0.01, 0.1], "seed": 0},
    "sdl": {"targets": [9, 8, 3], "n_components": 2, "xis": [1.0, 0.1, 0.01], "iterations": 500, "seed": 0},
    "dgno": {"steps": 300, "centers_per_axis": 6, "radius": 0.12, "n_quad": 6, "seed": 0},
}


def _digits(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return torch.tensor(digits.data, dtype=dtype) / 16 * 2 - 1, torch.tensor(digits.target)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((10 * torch.log10(4 / (a - b).pow(2).mean(1))).mean())  # pixel range [-1, 1] → peak² = 4


def _bench_red_diff(cfg: dict[str, Any]) -> dict[str, Any]:
    x, _ = _digits(torch.float64)
    g = torch.Generator().manual_seed(cfg["seed"])
    perm = torch.randperm(len(x), generator=g)
    train, test = x[perm[:cfg["n_train"]]], x[perm[cfg["n_train"]:cfg["n_train"] + cfg["n_test"]]]
    mean, cov = train.mean(0), torch.cov(train.T) + 1e-3 * torch.eye(64, dtype=torch.float64)
    mask = (torch.rand(test.shape, generator=g) < cfg["observed"]).double()
    sy = cfg["sigma_y"]
    y = mask * (test + sy * torch.randn(test.shape, generator=g, dtype=torch.float64))
    posterior = []
    for i in range(len(test)):  # closed form E[x | y] under the same Gaussian prior and noise
        h = torch.eye(64, dtype=torch.float64)[mask[i] > 0]
        gain = cov @ h.T @ torch.linalg.inv(h @ cov @ h.T + sy**2 * torch.eye(h.shape[0], dtype=torch.float64))
        posterior.append(mean + gain @ (y[i][mask[i] > 0] - h @ mean))
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    alpha_bars = torch.cumprod(1 - betas, 0)[torch.linspace(999, 0, cfg["steps"]).long()]
    start = time.perf_counter()
    mu = REDDiff()(y, lambda z: mask * z, gaussian_prior_eps(mean, cov), alpha_bars, init=y.clone(),
                   generator=torch.Generator().manual_seed(cfg["seed"] + 1), show_progress_bar=False)
    return {"psnr_red_diff": _psnr(mu, test), "psnr_posterior_mean": _psnr(torch.stack(posterior), test),
            "psnr_prior_mean_fill": _psnr(mask * y + (1 - mask) * mean, test), "psnr_zero_fill": _psnr(y, test),
            "seconds_red_diff": time.perf_counter() - start}


class _Velocity(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64 * 3 + 1, 256), nn.SiLU(), nn.Linear(256, 256), nn.SiLU(),
                                 nn.Linear(256, 64))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x_t, cond, t[:, None]], 1))


def _hole_masks(n: int, g: torch.Generator) -> torch.Tensor:
    masks = torch.ones(n, 8, 8)
    corner = torch.randint(0, 5, (n, 2), generator=g)
    for i in range(n):
        masks[i, corner[i, 0]:corner[i, 0] + 4, corner[i, 1]:corner[i, 1] + 4] = 0
    return masks.flatten(1)


def _bench_bad_noise(cfg: dict[str, Any]) -> dict[str, Any]:
    x, _ = _digits(torch.float32)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, test = x[perm[:1500]], x[perm[1500:]]
    out: dict[str, Any] = {}
    for arm in ("plain", "minimax"):
        rows = []
        for seed in cfg["seeds"]:
            torch.manual_seed(seed)
            g = torch.Generator().manual_seed(seed)
            model = _Velocity()
            optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
            term = BadNoiseMinimax(step_size=cfg["step_size"], adversarial_fraction=cfg["adversarial_fraction"])
            for _ in range(cfg["train_steps"]):
                idx = torch.randint(0, len(train), (cfg["batch"],), generator=g)
                x0, m = train[idx], _hole_masks(cfg["batch"], g)
                cond, noise = torch.cat([x0 * m, m], 1), torch.randn(x0.shape, generator=g)
                t = torch.rand(cfg["batch"], generator=g)
                loss = term.forward(model, x0, noise, t, cond) if arm == "minimax" else \
                    flow_matching_loss(model, x0, noise, t, cond)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            rows.append(_evaluate_remover(model, test, cfg))
        out[arm] = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]} | {"per_seed": rows}
    return out


def _evaluate_remover(model: nn.Module, test: torch.Tensor, cfg: dict[str, Any]) -> dict[str, float]:
    g = torch.Generator().manual_seed(123)
    m = _hole_masks(len(test), g)
    cond = torch.cat([test * m, m], 1)
    errors = []
    times = torch.linspace(1, 0, cfg["sample_steps"] + 1)
    for _ in range(8):
        z = torch.randn(test.shape, generator=g)
        with torch.no_grad():
            for i in range(cfg["sample_steps"]):
                z = z - (times[i] - times[i + 1]) * model(z, torch.full((len(test),), float(times[i])), cond)
        errors.append(((z - test) * (1 - m)).pow(2).sum(1) / (1 - m).sum(1))
    err = torch.stack(errors)
    t, noise = torch.full((len(test),), 0.9), torch.randn(test.shape, generator=g)
    bad = bad_noise(model, test, noise, t, cond, cfg["step_size"], 5)
    with torch.no_grad():
        random_loss = float(flow_matching_loss(model, test, noise, t, cond))
        bad_loss = float(flow_matching_loss(model, test, bad, t, cond))
    return {"hole_mse_mean": float(err.mean()), "hole_mse_worst_of_8": float(err.max(0).values.mean()),
            "flow_loss_random_noise": random_loss, "flow_loss_bad_noise": bad_loss}


def _bench_mee(cfg: dict[str, Any]) -> dict[str, Any]:
    centers = 2 * torch.tensor([[math.cos(2 * math.pi * k / 8), math.sin(2 * math.pi * k / 8)] for k in range(8)])
    out: dict[str, Any] = {}
    for eta in (0.0, cfg["eta"]):
        rows = []
        for seed in cfg["seeds"]:
            torch.manual_seed(seed)
            g = torch.Generator().manual_seed(seed)
            gen = nn.Sequential(nn.Linear(8, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 2))
            codes = nn.Sequential(nn.Linear(2, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 8))
            head = nn.Linear(8, 1)
            opt_g = torch.optim.Adam(gen.parameters(), lr=1e-3, betas=(0.5, 0.9))
            opt_d = torch.optim.Adam([*codes.parameters(), *head.parameters()], lr=1e-3, betas=(0.5, 0.9))
            entropy = ManifoldEntropy(code_dim=8, buffer_size=cfg["buffer"])
            bce = nn.functional.binary_cross_entropy_with_logits
            ones, zeros = torch.ones(128, 1), torch.zeros(128, 1)
            for step in range(cfg["steps"]):
                real = centers[torch.randint(0, 8, (128,), generator=g)] + 0.05 * torch.randn(128, 2, generator=g)
                fake = gen(torch.randn(128, 8, generator=g)).detach()
                loss_d = bce(head(codes(real)), ones) + bce(head(codes(fake)), zeros)
                opt_d.zero_grad()
                loss_d.backward()
                opt_d.step()
                c = codes(gen(torch.randn(128, 8, generator=g)))
                loss_g = bce(head(c), ones)
                if eta > 0:
                    loss_g = loss_g + eta * min(1.0, step / 1000) * entropy.forward(c)
                opt_g.zero_grad()
                loss_g.backward()
                opt_g.step()
            with torch.no_grad():
                samples = gen(torch.randn(4000, 8, generator=g))
            nearest = torch.cdist(samples, centers).min(1)
            good = nearest.values < 0.3
            counts = torch.bincount(nearest.indices[good], minlength=8)
            rows.append({"modes_covered": int((counts > 0.02 * 4000).sum()),
                         "high_quality_fraction": float(good.float().mean()), "counts": counts.tolist()})
        out[f"eta={eta}"] = rows
    return out


def _bench_gifd(cfg: dict[str, Any]) -> dict[str, Any]:
    x, labels = _digits(torch.float64)
    g = torch.Generator().manual_seed(cfg["seed"])
    perm = torch.randperm(len(x), generator=g)
    train, test = perm[:1500], perm[1500:]
    torch.manual_seed(cfg["seed"])
    encoder = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 8)).double()
    blocks = [nn.Sequential(nn.Linear(8, 32), nn.Tanh()).double(),
              nn.Sequential(nn.Linear(32, 64), nn.Tanh()).double(),
              nn.Sequential(nn.Linear(64, 64), nn.Tanh()).double()]
    decoder = nn.Sequential(*blocks)
    opt = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=3e-3)
    for _ in range(2000):  # the "generative prior": an autoencoder's decoder trained on digits
        batch = x[train[torch.randint(0, 1500, (128,), generator=g)]]
        loss = (decoder(encoder(batch)) - batch).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    autoencoder_mse = float(loss.detach())
    decoder.requires_grad_(False)
    victim = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10)).double()
    opt = torch.optim.Adam(victim.parameters(), lr=3e-3)
    for _ in range(300):
        idx = train[torch.randint(0, 1500, (128,), generator=g)]
        loss = nn.functional.cross_entropy(victim(x[idx]), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    ce = nn.functional.cross_entropy
    attacks = {
        "pixel": (GIFDAttack(steps=(cfg["steps_latent"],), radii=(), lr=0.05, show_progress_bar=False), [],
                  torch.zeros(1, 64, dtype=torch.float64)),
        "latent": (GIFDAttack(steps=(cfg["steps_latent"],), radii=(), lr=0.05, show_progress_bar=False), blocks,
                   torch.zeros(1, 8, dtype=torch.float64)),
        "gifd": (GIFDAttack(steps=tuple(cfg["steps_gifd"]), radii=(cfg["radius"],) * 2, lr=0.05,
                            show_progress_bar=False), blocks,
                 torch.zeros(1, 8, dtype=torch.float64)),
    }
    mse: dict[str, list[float]] = {}
    for k in range(cfg["digits"]):
        target, label = x[test[k]][None], labels[test[k]][None]
        grads = list(torch.autograd.grad(ce(victim(target), label), list(victim.parameters())))
        defenses = {"none": grads, f"prune_{cfg['prune']}": prune_gradients(grads, cfg["prune"]),
                    f"noise_{cfg['noise_std']}": noisy_gradients(grads, cfg["noise_std"],
                                                               torch.Generator().manual_seed(k))}
        for defense, shared in defenses.items():
            for name, (attack, gen_blocks, start) in attacks.items():
                result = attack(victim, ce, shared, label, gen_blocks, start)
                mse.setdefault(f"{defense}/{name}", []).append(float((result.x - target).pow(2).mean()))
    return {"autoencoder_train_mse": autoencoder_mse, "victim_train_loss": float(loss.detach()),
            "mean_reconstruction_mse": {k: sum(v) / len(v) for k, v in mse.items()}}


def _inside_trefoil(p: torch.Tensor) -> torch.Tensor:
    r, theta = p.norm(dim=-1), torch.atan2(p[:, 1], p[:, 0])
    return (r < 0.5 + 0.15 * torch.cos(3 * theta)).float()


def _bench_orex(cfg: dict[str, Any]) -> dict[str, Any]:
    g = torch.Generator().manual_seed(cfg["seed"])
    ys = torch.tensor([-0.6, -0.3, 0.0, 0.3, 0.6])
    pts = [torch.stack([torch.rand(200, generator=g) * 2 - 1, y.repeat(200)], 1) for y in ys]
    fine = torch.linspace(-1, 1, 2001)
    for y in ys:  # boundary sampling around each in/out crossing of each slice
        lab = _inside_trefoil(torch.stack([fine, y.repeat(2001)], 1))
        for i in (lab[1:] != lab[:-1]).nonzero().flatten():
            offset = (torch.rand(50, generator=g) * 2 - 1) * 2**-5
            pts.append(torch.stack([fine[i] + offset, y.repeat(50)], 1))
    points = torch.cat(pts)
    labels = 1 - _inside_trefoil(points)
    grid = torch.cartesian_prod(torch.linspace(-1, 1, 121), torch.linspace(-1, 1, 121))
    out = {}
    for weight in cfg["weights"]:
        torch.manual_seed(cfg["seed"])
        field, hinge = FourierFeatureField(width=64), OReXGradientHinge(alpha=cfg["alpha"])
        optimizer = torch.optim.Adam(field.parameters(), lr=3e-3)
        for _ in range(cfg["steps"]):
            xp = points.clone().requires_grad_(True)
            logits = field(xp)
            loss = iterative_bce([logits], labels)
            if weight:
                loss = loss + weight * hinge.forward(xp, logits)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        xp = points.clone().requires_grad_(True)
        logits = field(xp)
        value, norms = input_gradient_hinge(xp, logits, cfg["alpha"])
        with torch.no_grad():
            pred, true = (field(grid) < 0).float(), _inside_trefoil(grid)
        out[f"lambda={weight}"] = {
            "hinge_at_training_points": float(value.detach()), "max_grad_norm": float(norms.detach().max()),
            "train_accuracy": float(((logits.detach() > 0).float() == labels).float().mean()),
            "iou_with_shape": float((pred * true).sum() / ((pred + true) > 0).sum())}
    return out


def _bench_sdl(cfg: dict[str, Any]) -> dict[str, Any]:
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    x, labels = _digits(torch.float64)
    x = (x + 1) / 2
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(cfg["seed"]))
    tr, te = perm[:len(x) // 2], perm[len(x) // 2:]
    out = {}
    for target in cfg["targets"]:
        y = (labels == target).double()
        pca = PCA(cfg["n_components"]).fit(x[tr].numpy())
        clf = LogisticRegression().fit(pca.transform(x[tr].numpy()), y[tr].numpy())
        scores = clf.predict_proba(pca.transform(x[te].numpy()))[:, 1]
        row: dict[str, Any] = {
            "pca+logreg_auc": float(roc_auc_score(y[te].numpy(), scores)),
            "pca_rel_recon": float(torch.linalg.norm(torch.from_numpy(
                pca.inverse_transform(pca.transform(x[tr].numpy()))) - x[tr]) / x[tr].norm())}
        for xi in cfg["xis"]:
            model = SupervisedDictionaryLearning(n_components=cfg["n_components"], xi=xi, mode="filter",
                                                 iterations=cfg["iterations"])
            result = model.fit(x[tr].T, y[tr], generator=torch.Generator().manual_seed(cfg["seed"]),
                               show_progress_bar=False)
            row[f"sdl_xi={xi}"] = {
                "auc": float(roc_auc_score(y[te].numpy(), model.predict_proba(result, x[te].T).numpy())),
                "rel_recon": float((x[tr].T - result.dictionary @ result.codes).norm() / x[tr].norm())}
        out[f"digit_{target}_vs_rest"] = row
    return out


def _bench_dgno(cfg: dict[str, Any]) -> dict[str, Any]:
    exact = lambda p: torch.sin(math.pi * p[:, 0]) * torch.sin(math.pi * p[:, 1])  # noqa: E731
    source = lambda p: 2 * math.pi**2 * exact(p)  # noqa: E731
    grid = torch.cartesian_prod(*(torch.linspace(0, 1, 41, dtype=torch.float64),) * 2)
    axis = torch.linspace(0.15, 0.85, cfg["centers_per_axis"], dtype=torch.float64)
    centers = torch.cartesian_prod(axis, axis)
    n_points = len(centers) * cfg["n_quad"] * 2 * cfg["n_quad"]
    out: dict[str, Any] = {"collocation_points_per_step": n_points}
    for kind in ("weak", "strong"):
        torch.manual_seed(cfg["seed"])
        net = nn.Sequential(nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 1)).double()

        def u(p: torch.Tensor, net: nn.Module = net) -> torch.Tensor:
            return p[:, 0] * (1 - p[:, 0]) * p[:, 1] * (1 - p[:, 1]) * net(p)[:, 0]

        optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
        term = WeakFormResidual(radius=cfg["radius"], n_quad=cfg["n_quad"], reduction="mean")
        g = torch.Generator().manual_seed(cfg["seed"])
        start = time.perf_counter()
        for _ in range(cfg["steps"]):
            if kind == "weak":
                loss = term.forward(u, centers, 1.0, source)
            else:
                p = torch.rand(n_points, 2, generator=g, dtype=torch.float64).requires_grad_(True)
                (grad,) = torch.autograd.grad(u(p).sum(), p, create_graph=True)
                lap = sum(torch.autograd.grad(grad[:, i].sum(), p, create_graph=True)[0][:, i] for i in range(2))
                loss = (-lap - source(p)).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            error = float((u(grid) - exact(grid)).norm() / exact(grid).norm())
        out[kind] = {"rel_l2_error": error, "seconds": time.perf_counter() - start}
    out["time_ratio_weak_over_strong"] = out["weak"]["seconds"] / out["strong"]["seconds"]
    c = 0.1625 / 0.55  # −(a u')' = 1 on (0, 1), a = 1 | 10 across x = 0.5: flux a u' = c − x is continuous

    def piecewise(p: torch.Tensor) -> torch.Tensor:
        s = p[:, 0]
        left = c * s - s**2 / 2
        return torch.where(s < 0.5, left, (c * 0.5 - 0.125) + 0.1 * (left - (c * 0.5 - 0.125)))

    coefficient = lambda p: torch.where(p[:, 0] < 0.5, 1.0, 10.0).double()  # noqa: E731
    centers_1d = torch.arange(0.04, 0.961, 0.02, dtype=torch.float64)[:, None]
    out["discontinuous_1d_exact_max_residual"] = float(
        weak_form_residuals(piecewise, centers_1d, 0.04, coefficient, 1.0, 16).abs().max())
    return out


def run(out_dir: Path) -> dict[str, Any]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    results: dict[str, Any] = {"config": CONFIG, "torch_threads": 1}
    try:
        for name, fn in (("red_diff", _bench_red_diff), ("sdl", _bench_sdl), ("dgno", _bench_dgno),
                         ("orex", _bench_orex), ("gifd", _bench_gifd), ("bad_noise", _bench_bad_noise),
                         ("mee", _bench_mee)):
            start = time.perf_counter()
            results[name] = fn(CONFIG[name])
            results[name]["bench_seconds"] = time.perf_counter() - start
            logger.info("%s done in %.1f s", name, results[name]["bench_seconds"])
    finally:
        torch.set_num_threads(threads)
    return results
