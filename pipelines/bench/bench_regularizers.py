"""Small real demonstrations of the robust, stochastic, distill, augment and representation families (F3–F7) on
scikit-learn's bundled datasets, 3 seeds each.

Protocol (``run(out_dir)``), every number is mean ± std over seeds 0, 1, 2 (the seed sets the split, the noise, the
initialisation and the batch order):

* data: ``load_digits`` (1797 8×8 images, pixels / 16, stratified 80/20 split) and ``load_diabetes`` (442 patients,
  10 standardized features, target standardized with the training mean/std, 80/20 split);
* model: MLP 64→128→128→10 (ReLU) for digits (batch 128); 10→64→64→1 for diabetes (batch 128); Adam lr 1e-3;
* robust (F4): 40 % symmetric label noise on the digits training labels (a noisy label is uniform over the 9 other
  classes); cross-entropy vs ELR (β = 0.7, λ = 3, official CIFAR-10 values) vs Co-teaching (τ = 0.4, T_k = 10);
  80 epochs (long enough for CE to memorise the noise), final clean test accuracy (no early stopping);
* robust (F4): ConR on diabetes (imbalanced regression target): MSE vs MSE + 0.5 · ConR (w = 0.25 target std,
  τ = 0.07, e = 0.01 with the target in std units), 150 epochs; test MAE overall and on the tail (test targets
  outside the 15–85 % quantiles of the training targets), in original target units;
* stochastic (F5): multi-sample dropout on the digits head (dropout p = 0.5 before the last layer), M = 1 vs M = 8,
  20 epochs; full-training-set CE (eval mode) after 2 and 5 epochs, first epoch with that CE < 0.15, final test
  accuracy, wall time;
* distill (F3): PS-KD (α_T = 0.8) vs CE on clean digits, 60 epochs: test accuracy, NLL, ECE (15 bins); random teacher:
  a random MLP 64→128→128→128 teacher, a student initialised as a 0.1-std perturbed copy, 20 epochs of label-free
  distillation (τ_t = 0.04, τ_s = 0.1); ridge linear-probe test accuracy on the 128-d penultimate features of teacher
  vs student ("student beats teacher");
* augment (F6): CutMix (α = 1, probability 0.5) vs none on digits as 1×8×8 images, 30 epochs, test accuracy;
* representation (F7): neural-collapse metrics (NC1, NC2 angle) of the digits training features after 1, 10 and 40
  epochs of CE training.

The absolute numbers are small-model, small-data results; they show the mechanisms behave as described, not the
papers' benchmark gains.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_diabetes, load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor, nn
from tqdm import tqdm

from common_regs.api import TrainContext
from common_regs.augment import CutMix
from common_regs.distill import (
    DistillLoss,
    ProgressiveSelfDistillation,
    RandomTeacher,
    perturbed_copy,
    ridge_probe_accuracy,
)
from common_regs.io import atomic_write_text
from common_regs.representation import neural_collapse_metrics
from common_regs.robust import CoTeaching, EarlyLearningRegularization, conr_loss
from common_regs.stochastic import MultiSampleDropout
from common_regs.training import RegHooks

logger = logging.getLogger(__name__)

__all__ = ["run"]

SEEDS = (0, 1, 2)
BATCH = 128
HIDDEN = 128
NOISE_RATE = 0.4


class _MLP(nn.Module):
    def __init__(self, sizes: tuple[int, ...], head_dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-2], sizes[1:-1], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(sizes[-2], sizes[-1])

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.dropout(self.body(x)))


def _digits(seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x / 16.0, y, test_size=0.2, stratify=y, random_state=seed)
    return (
        torch.tensor(x_tr, dtype=torch.float32),
        torch.tensor(y_tr),
        torch.tensor(x_te, dtype=torch.float32),
        torch.tensor(y_te),
    )


def _symmetric_noise(labels: Tensor, rate: float, num_classes: int, generator: torch.Generator) -> Tensor:
    noisy = labels.clone()
    flip = torch.rand(len(labels), generator=generator) < rate
    shift = torch.randint(1, num_classes, (len(labels),), generator=generator)
    noisy[flip] = (labels[flip] + shift[flip]) % num_classes
    return noisy


def _batches(n: int, generator: torch.Generator) -> Iterator[Tensor]:
    order = torch.randperm(n, generator=generator)
    yield from order.split(BATCH)


def _accuracy(logits: Tensor, labels: Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean())


def _ece(logits: Tensor, labels: Tensor, bins: int = 15) -> float:
    probs = logits.softmax(1)
    confidence, prediction = probs.max(1)
    correct = (prediction == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    total = 0.0
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            total += float(in_bin.float().mean() * (confidence[in_bin].mean() - correct[in_bin].mean()).abs())
    return total


def _summary(values: list[float]) -> dict[str, Any]:
    """Mean and sample std (None when a run has no value, e.g. a threshold never reached)."""
    clean = [None if math.isnan(v) else v for v in values]
    if None in clean:
        return {"mean": None, "std": None, "values": clean}
    return {
        "mean": float(np.mean(values)),
        "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
        "values": clean,
    }


def _train_classifier(
    seed: int,
    x: Tensor,
    y: Tensor,
    epochs: int,
    *,
    hooks: list[Any] | None = None,
    task_loss: Callable[[Tensor, Any], Tensor] | None = None,
    head_dropout: float = 0.0,
    transform: Callable[[tuple[Tensor, Tensor]], tuple[Tensor, Tensor]] | None = None,
    on_epoch: Callable[[int, _MLP], None] | None = None,
) -> _MLP:
    torch.manual_seed(seed)
    model = _MLP((x.shape[1], HIDDEN, HIDDEN, 10), head_dropout)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    reg_hooks = RegHooks(hooks or [], model, optimizer)
    loss_fn = task_loss or (lambda out, b: F.cross_entropy(out, b[1]))
    generator = torch.Generator().manual_seed(seed)
    step = 0
    for epoch in range(epochs):
        model.train()
        for rows in _batches(len(x), generator):
            batch = (x[rows], y[rows])
            if transform is not None:
                batch = transform(batch)
            reg_hooks.step(batch, lambda b: model(b[0]), loss_fn, step=step, epoch=epoch, sample_indices=rows)
            step += 1
        if on_epoch is not None:
            on_epoch(epoch, model)
    return model.eval()


def _noisy_labels(seeds: tuple[int, ...]) -> dict[str, Any]:
    results: dict[str, list[float]] = {"cross_entropy": [], "elr": [], "co_teaching": []}
    epochs = 80
    for seed in tqdm(seeds, desc="noisy labels", disable=None):
        x, y, x_te, y_te = _digits(seed)
        noisy = _symmetric_noise(y, NOISE_RATE, 10, torch.Generator().manual_seed(100 + seed))
        model = _train_classifier(seed, x, noisy, epochs)
        results["cross_entropy"].append(_accuracy(model(x_te), y_te))
        model = _train_classifier(
            seed,
            x,
            noisy,
            epochs,
            hooks=[EarlyLearningRegularization(len(x), 10, beta=0.7, weight=3.0)],
        )
        results["elr"].append(_accuracy(model(x_te), y_te))
        results["co_teaching"].append(_co_teaching(seed, x, noisy, x_te, y_te, epochs))
    return {
        "setting": f"digits, {int(NOISE_RATE * 100)}% symmetric noise, {epochs} epochs, clean test accuracy",
        **{k: _summary(v) for k, v in results.items()},
    }


def _co_teaching(seed: int, x: Tensor, y: Tensor, x_te: Tensor, y_te: Tensor, epochs: int) -> float:
    torch.manual_seed(seed)
    nets = nn.ModuleList([_MLP((64, HIDDEN, HIDDEN, 10)), _MLP((64, HIDDEN, HIDDEN, 10))])
    optimizer = torch.optim.Adam(nets.parameters(), lr=1e-3)
    hooks = RegHooks([CoTeaching(noise_rate=NOISE_RATE, gradual_epochs=10)], nets, optimizer)
    generator = torch.Generator().manual_seed(seed)
    step = 0
    for epoch in range(epochs):
        for rows in _batches(len(x), generator):
            hooks.step(
                (x[rows], y[rows]),
                lambda b: (nets[0](b[0]), nets[1](b[0])),
                lambda out, b: out[0].sum() * 0.0,
                step=step,
                epoch=epoch,
            )
            step += 1
    nets.eval()
    return _accuracy(nets[0](x_te), y_te)


def _conr(seeds: tuple[int, ...]) -> dict[str, Any]:
    epochs, weight = 150, 0.5
    results: dict[str, dict[str, list[float]]] = {m: {"mae": [], "tail_mae": []} for m in ("mse", "mse_conr")}
    for seed in tqdm(seeds, desc="ConR", disable=None):
        x, y = load_diabetes(return_X_y=True)
        x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=seed)
        mean, std = x_tr.mean(0), x_tr.std(0)
        y_mean, y_std = y_tr.mean(), y_tr.std()
        xt, xe = (torch.tensor((a - mean) / std, dtype=torch.float32) for a in (x_tr, x_te))
        yt = torch.tensor((y_tr - y_mean) / y_std, dtype=torch.float32)
        low, high = np.quantile(y_tr, [0.15, 0.85])
        tail = torch.tensor((y_te < low) | (y_te > high))
        for method in results:
            torch.manual_seed(seed)
            model = _MLP((10, 64, 64, 1))
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
            generator = torch.Generator().manual_seed(seed)
            for _ in range(epochs):
                model.train()
                for rows in _batches(len(xt), generator):
                    features = model.features(xt[rows])
                    prediction = model.head(features).squeeze(1)
                    loss = F.mse_loss(prediction, yt[rows])
                    if method == "mse_conr":
                        loss = loss + weight * conr_loss(features, yt[rows], prediction, window=0.25)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
            model.eval()
            with torch.no_grad():
                predicted = model(xe).squeeze(1).numpy() * y_std + y_mean
            error = np.abs(predicted - y_te)
            results[method]["mae"].append(float(error.mean()))
            results[method]["tail_mae"].append(float(error[tail.numpy()].mean()))
    return {
        "setting": f"diabetes, {epochs} epochs, MAE in target units (tail: outside the 15-85% train quantiles)",
        **{m: {k: _summary(v) for k, v in r.items()} for m, r in results.items()},
    }


def _multi_sample_dropout(seeds: tuple[int, ...]) -> dict[str, Any]:
    epochs, threshold = 20, 0.15
    results: dict[str, dict[str, list[float]]] = {}
    for m in (1, 8):
        keys = ("train_ce_epoch2", "train_ce_epoch5", f"epochs_to_train_ce_{threshold}", "test_acc_final", "seconds")
        stats: dict[str, list[float]] = {k: [] for k in keys}
        for seed in tqdm(seeds, desc=f"multi-sample dropout M={m}", disable=None):
            x, y, x_te, y_te = _digits(seed)
            torch.manual_seed(seed)
            model = _MLP((64, HIDDEN, HIDDEN, 10))
            msd = MultiSampleDropout(model.head, num_samples=m, p=0.5)
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
            generator = torch.Generator().manual_seed(seed)
            reached = float("nan")
            started = time.perf_counter()
            for epoch in range(epochs):
                model.train()
                for rows in _batches(len(x), generator):
                    loss = msd.loss(model.features(x[rows]), y[rows])
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                model.eval()
                with torch.no_grad():
                    train_ce = float(F.cross_entropy(model(x), y))
                if math.isnan(reached) and train_ce < threshold:
                    reached = float(epoch + 1)
                if epoch + 1 in (2, 5):
                    stats[f"train_ce_epoch{epoch + 1}"].append(train_ce)
            stats["seconds"].append(time.perf_counter() - started)
            stats[f"epochs_to_train_ce_{threshold}"].append(reached)
            with torch.no_grad():
                stats["test_acc_final"].append(_accuracy(model(x_te), y_te))
        results[f"M={m}"] = {k: _summary(v) for k, v in stats.items()}
    return {
        "setting": f"digits, dropout p=0.5 before the head, {epochs} epochs; train CE: eval mode, full train set",
        **results,
    }


def _pskd(seeds: tuple[int, ...]) -> dict[str, Any]:
    epochs = 60
    results: dict[str, dict[str, list[float]]] = {
        m: {"acc": [], "nll": [], "ece": []} for m in ("cross_entropy", "ps_kd")
    }
    for seed in tqdm(seeds, desc="PS-KD", disable=None):
        x, y, x_te, y_te = _digits(seed)
        for method in results:
            if method == "ps_kd":
                model = _train_classifier(
                    seed,
                    x,
                    y,
                    epochs,
                    task_loss=lambda out, b: out.sum() * 0.0,
                    hooks=[ProgressiveSelfDistillation(len(x), 10, 0.8, epochs), DistillLoss()],
                )
            else:
                model = _train_classifier(seed, x, y, epochs)
            with torch.no_grad():
                logits = model(x_te)
            results[method]["acc"].append(_accuracy(logits, y_te))
            results[method]["nll"].append(float(F.cross_entropy(logits, y_te)))
            results[method]["ece"].append(_ece(logits, y_te))
    return {
        "setting": f"digits (clean), {epochs} epochs, test accuracy / NLL / ECE (15 bins)",
        **{m: {k: _summary(v) for k, v in r.items()} for m, r in results.items()},
    }


def _random_teacher(seeds: tuple[int, ...]) -> dict[str, Any]:
    epochs = 20
    stats: dict[str, list[float]] = {"teacher_probe_acc": [], "student_probe_acc": []}
    for seed in tqdm(seeds, desc="random teacher", disable=None):
        x, y, x_te, y_te = _digits(seed)
        torch.manual_seed(seed)
        teacher = _MLP((64, HIDDEN, HIDDEN, 128))
        student = perturbed_copy(teacher, 0.1, torch.Generator().manual_seed(seed))
        provider = RandomTeacher(teacher)
        optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
        generator = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            for rows in _batches(len(x), generator):
                ctx = TrainContext(model=student, batch=x[rows])
                loss = provider.loss(student(x[rows]), provider.targets(ctx))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        with torch.no_grad():
            for name, net in (("teacher", teacher), ("student", student)):
                stats[f"{name}_probe_acc"].append(
                    ridge_probe_accuracy(net.features(x), y, net.features(x_te), y_te, ridge=1e-2)
                )
    return {
        "setting": f"digits, label-free distillation {epochs} epochs, ridge probe on 128-d features",
        **{k: _summary(v) for k, v in stats.items()},
    }


def _cutmix(seeds: tuple[int, ...]) -> dict[str, Any]:
    epochs = 30
    results: dict[str, list[float]] = {"none": [], "cutmix": []}
    for seed in tqdm(seeds, desc="CutMix", disable=None):
        x, y, x_te, y_te = _digits(seed)
        results["none"].append(_accuracy(_train_classifier(seed, x, y, epochs)(x_te), y_te))
        cutmix = CutMix(num_classes=10, alpha=1.0, prob=0.5, seed=seed)

        def transform(batch: tuple[Tensor, Tensor], cutmix=cutmix) -> tuple[Tensor, Tensor]:
            images, soft = cutmix((batch[0].reshape(-1, 1, 8, 8), batch[1]))
            return images.reshape(-1, 64), soft

        model = _train_classifier(
            seed,
            x,
            y,
            epochs,
            transform=transform,
            task_loss=lambda out, b: -(b[1] * out.log_softmax(1)).sum(1).mean(),
        )
        results["cutmix"].append(_accuracy(model(x_te), y_te))
    return {
        "setting": f"digits as 1x8x8 images, {epochs} epochs, test accuracy (CutMix prob 0.5, alpha 1)",
        **{k: _summary(v) for k, v in results.items()},
    }


def _neural_collapse(seeds: tuple[int, ...]) -> dict[str, Any]:
    checkpoints = (1, 10, 40)
    stats: dict[str, list[float]] = {f"{metric}_epoch{e}": [] for e in checkpoints for metric in ("nc1", "nc2_angle")}
    stats["test_acc"] = []
    for seed in tqdm(seeds, desc="neural collapse", disable=None):
        x, y, x_te, y_te = _digits(seed)

        def on_epoch(epoch: int, model: _MLP, x=x, y=y) -> None:
            if epoch + 1 in checkpoints:
                with torch.no_grad():
                    metrics = neural_collapse_metrics(model.features(x), y)
                stats[f"nc1_epoch{epoch + 1}"].append(metrics["nc1"])
                stats[f"nc2_angle_epoch{epoch + 1}"].append(metrics["nc2_angle"])

        model = _train_classifier(seed, x, y, max(checkpoints), on_epoch=on_epoch)
        stats["test_acc"].append(_accuracy(model(x_te), y_te))
    return {
        "setting": "digits, CE training, metrics of the 128-d training features",
        **{k: _summary(v) for k, v in stats.items()},
    }


def _fmt(summary: dict[str, Any], digits: int = 3) -> str:
    if summary["mean"] is None:
        return (
            "not reached in some runs (" + ", ".join("-" if v is None else f"{v:g}" for v in summary["values"]) + ")"
        )
    return f"{summary['mean']:.{digits}f} ± {summary['std']:.{digits}f}"


def _markdown(results: dict[str, Any]) -> str:
    lines = ["# regularizer families: demonstrations (mean ± std over seeds 0, 1, 2)", ""]
    for name, block in results.items():
        lines += [f"## {name}", "", f"{block['setting']}", "", "| variant | metric | value |", "|---|---|---|"]
        for variant, value in block.items():
            if variant == "setting":
                continue
            if "mean" in value:
                lines.append(f"| {variant} | - | {_fmt(value)} |")
            else:
                lines += [f"| {variant} | {metric} | {_fmt(summary)} |" for metric, summary in value.items()]
        lines.append("")
    return "\n".join(lines)


def run(out_dir: Path, seeds: tuple[int, ...] = SEEDS) -> dict[str, Any]:
    """Run every demonstration; writes ``regularizers.md`` and ``regularizers_results.json`` in ``out_dir``."""
    torch.set_num_threads(1)
    started = time.perf_counter()
    results = {
        "robust_noisy_labels": _noisy_labels(seeds),
        "robust_conr": _conr(seeds),
        "stochastic_multi_sample_dropout": _multi_sample_dropout(seeds),
        "distill_pskd": _pskd(seeds),
        "distill_random_teacher": _random_teacher(seeds),
        "augment_cutmix": _cutmix(seeds),
        "representation_neural_collapse": _neural_collapse(seeds),
    }
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "regularizers.md", _markdown(results))
    payload = {"seeds": list(seeds), "seconds": time.perf_counter() - started, "results": results}
    atomic_write_text(out_dir / "regularizers_results.json", json.dumps(payload, indent=2) + "\n")
    logger.info("regularizer demonstrations done in %.0f s", payload["seconds"])
    return payload
