"""Low-rank / quantization reparametrizations on scikit-learn's ``digits``: accuracy vs. trainable parameters,
and per-step training overhead of every reparametrization relative to the plain model (same process, same card).

Protocol (``run(out_dir)``):

* data: ``sklearn.datasets.load_digits`` (1797 8×8 images), pixels / 16, stratified 70/30 split (seed 0);
* source task: the images as they are; target task: the same images transposed (a 90°-rotation-like domain shift,
  same 10 labels). An MLP 64→128→128→10 is pretrained on the source train split;
* fine-tuning on the target train split, 40 epochs, batch 64, Adam; the classifier head (last layer) is trainable in
  every method; methods: head only, full fine-tuning, LoRA (PEFT ``inject_adapter_in_model``, r = 4), SVFit (99 %
  energy), SORSA (r = 4, + orthonormality penalty γ = 4e-4); reported: target test accuracy (mean ± std over 3 seeds)
  and trainable parameters (adapter + head);
* overhead: wall time of one training step (forward, backward, Adam step; batch 64) with each
  reparametrization applied to both hidden layers vs. the plain model, timed in 10 alternating blocks of 20 steps
  (robust to load drift on a shared machine); ratio = median of the per-block ratios; 1 CPU thread.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from common_regs.api import TrainContext
from common_regs.io import atomic_write_text
from common_regs.lowrank import (
    PELA,
    SORSA,
    Maestro,
    RegularizedMaskTuning,
    SorsaOrthonormalPenalty,
    SVFit,
    WeightCompander,
)
from common_regs.quant import ElasticQuantization, QuantizationNoise

logger = logging.getLogger(__name__)

__all__ = ["run"]

CONFIG: dict[str, Any] = {
    "hidden": 128, "pretrain_epochs": 60, "finetune_epochs": 40, "batch_size": 64, "seeds": [0, 1, 2],
    "lr_adapter": 1e-2, "lr_full": 1e-3, "lora_rank": 4, "sorsa_rank": 4, "sorsa_gamma": 4e-4, "svfit_energy": 0.99,
    "timing_steps": 200, "timing_warmup": 20,
}


def _data() -> dict[str, torch.Tensor]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.3, stratify=y, random_state=0)
    as_t = torch.from_numpy
    return {
        "src_x": as_t(x_tr.reshape(len(x_tr), -1)), "src_y": as_t(y_tr),
        "tgt_x": as_t(np.transpose(x_tr, (0, 2, 1)).reshape(len(x_tr), -1).copy()), "tgt_y": as_t(y_tr),
        "tgt_test_x": as_t(np.transpose(x_te, (0, 2, 1)).reshape(len(x_te), -1).copy()), "tgt_test_y": as_t(y_te),
        "src_test_x": as_t(x_te.reshape(len(x_te), -1)), "src_test_y": as_t(y_te),
    }


def _mlp(hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def _train(model: nn.Module, params: list[nn.Parameter], x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float,
           seed: int, penalty: Callable[[], torch.Tensor] | None = None) -> None:
    optimizer = torch.optim.Adam(params, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=generator).split(CONFIG["batch_size"]):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            if penalty is not None:
                loss = loss + penalty()
            loss.backward()
            optimizer.step()


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(1) == y).float().mean())


def _head_params(model: nn.Sequential) -> list[nn.Parameter]:
    return list(model[4].parameters())


def _finetune(method: str, pretrained: dict[str, torch.Tensor], data: dict[str, torch.Tensor], seed: int
              ) -> tuple[float, int]:
    torch.manual_seed(seed)
    model = _mlp(CONFIG["hidden"])
    model.load_state_dict(pretrained)
    penalty = None
    lr = CONFIG["lr_adapter"]
    if method == "head_only":
        params = _head_params(model)
    elif method == "full":
        params, lr = list(model.parameters()), CONFIG["lr_full"]
    elif method == "lora_peft":
        from peft import LoraConfig, inject_adapter_in_model

        config = LoraConfig(r=CONFIG["lora_rank"], lora_alpha=CONFIG["lora_rank"], target_modules=["0", "2"],
                            lora_dropout=0.0)
        model = inject_adapter_in_model(config, model)
        params = [p for n, p in model.named_parameters() if "lora_" in n] + _head_params(model)
    elif method in ("svfit", "sorsa"):
        reparam = SVFit(energy=CONFIG["svfit_energy"], include=["0", "2"]) if method == "svfit" else \
            SORSA(rank=CONFIG["sorsa_rank"], include=["0", "2"])
        reparam.prepare(model)
        params = reparam.trainable_parameters() + _head_params(model)
        if method == "sorsa":
            term = SorsaOrthonormalPenalty(weight=CONFIG["sorsa_gamma"])
            penalty = lambda: term.weight * term(TrainContext(model=model))  # noqa: E731
    else:
        raise ValueError(f"unknown fine-tuning method {method!r}")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for parameter in params:
        parameter.requires_grad_(True)
    _train(model, params, data["tgt_x"], data["tgt_y"], CONFIG["finetune_epochs"], lr, seed, penalty)
    return _accuracy(model, data["tgt_test_x"], data["tgt_test_y"]), sum(p.numel() for p in params)


class _Stepper:
    """One model + optimizer whose training step can be timed in blocks."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        self.model, self.x, self.y = model.train(), x, y
        self.optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)

    def block(self, steps: int) -> float:
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            self.optimizer.zero_grad()
            nn.functional.cross_entropy(self.model(self.x), self.y).backward()
            self.optimizer.step()
            times.append(time.perf_counter() - start)
        return statistics.median(times)


def _interleaved_ratio(plain: _Stepper, method: _Stepper) -> tuple[float, float, float]:
    """Alternate blocks of plain and method steps (robust to machine-load drift); median of per-block ratios."""
    plain.block(CONFIG["timing_warmup"])
    method.block(CONFIG["timing_warmup"])
    blocks = 10
    per_block = CONFIG["timing_steps"] // blocks
    plain_t, method_t = [], []
    for _ in range(blocks):
        plain_t.append(plain.block(per_block))
        method_t.append(method.block(per_block))
    ratios = [m / p for m, p in zip(method_t, plain_t, strict=True)]
    return statistics.median(method_t), statistics.median(plain_t), statistics.median(ratios)


REPARAMS: dict[str, Callable[[], Any]] = {
    "svfit": lambda: SVFit(include=["0", "2"]),
    "sorsa": lambda: SORSA(rank=4, include=["0", "2"]),
    "maestro": lambda: Maestro(include=["0", "2"]),
    "pela": lambda: PELA(include=["0", "2"]),
    "weight_compander": lambda: WeightCompander(include=["0", "2"]),
    "regularized_mask_tuning": lambda: RegularizedMaskTuning(include=["0", "2"], freeze_base=False),
    "elastic_quantization": lambda: ElasticQuantization(include=["0", "2"]),
    "quantization_noise": lambda: QuantizationNoise(include=["0", "2"]),
}


def _overheads(pretrained: dict[str, torch.Tensor], data: dict[str, torch.Tensor]) -> dict[str, Any]:
    x, y = data["tgt_x"][: CONFIG["batch_size"]], data["tgt_y"][: CONFIG["batch_size"]]
    results: dict[str, Any] = {}

    def fresh() -> nn.Sequential:
        model = _mlp(CONFIG["hidden"])
        model.load_state_dict(pretrained)
        return model

    from peft import LoraConfig, inject_adapter_in_model

    builders: dict[str, Callable[[], nn.Module]] = {}
    for name, build in REPARAMS.items():
        builders[name] = lambda build=build: build().prepare(fresh())
    builders["lora_peft"] = lambda: inject_adapter_in_model(
        LoraConfig(r=4, lora_alpha=4, target_modules=["0", "2"]), fresh())
    plain = _Stepper(fresh(), x, y)
    for name, build in tqdm(builders.items(), desc="overhead", disable=not logger.isEnabledFor(logging.INFO)):
        method_s, plain_s, ratio = _interleaved_ratio(plain, _Stepper(build(), x, y))
        results[name] = {"ms": method_s * 1e3, "plain_ms": plain_s * 1e3, "ratio": ratio}
    return results


def _markdown(results: dict[str, Any]) -> str:
    lines = ["| method | trainable params (adapter + head) | target test accuracy (mean ± std, 3 seeds) |",
             "|---|---:|---:|"]
    for name, row in results["finetune"].items():
        accuracy = f"{row['accuracy_mean']:.4f} ± {row['accuracy_std']:.4f}"
        lines.append(f"| {name} | {row['trainable_params']} | {accuracy} |")
    lines += ["", "| reparametrization | ms / step | plain ms / step (interleaved) | ratio vs plain |",
              "|---|---:|---:|---:|"]
    for name, row in results["overhead"].items():
        lines.append(f"| {name} | {row['ms']:.3f} | {row['plain_ms']:.3f} | {row['ratio']:.2f} |")
    return "\n".join(lines) + "\n"


def run(out_dir: Path) -> dict[str, Any]:
    """Fine-tuning accuracy / parameter table and step-overhead ratios; writes ``out_dir/lowrank.md``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = _data()
        torch.manual_seed(0)
        source = _mlp(CONFIG["hidden"])
        _train(source, list(source.parameters()), data["src_x"], data["src_y"], CONFIG["pretrain_epochs"], 1e-3, 0)
        pretrained = {k: v.clone() for k, v in source.state_dict().items()}
        results: dict[str, Any] = {
            "config": CONFIG,
            "source_test_accuracy": _accuracy(source, data["src_test_x"], data["src_test_y"]),
            "pretrained_on_target_test_accuracy": _accuracy(source, data["tgt_test_x"], data["tgt_test_y"]),
            "finetune": {},
        }
        methods = ["head_only", "full", "lora_peft", "svfit", "sorsa"]
        for method in tqdm(methods, desc="fine-tune", disable=not logger.isEnabledFor(logging.INFO)):
            runs = [_finetune(method, pretrained, data, seed) for seed in CONFIG["seeds"]]
            accuracies = [acc for acc, _ in runs]
            results["finetune"][method] = {
                "accuracy_mean": statistics.mean(accuracies), "accuracy_std": statistics.pstdev(accuracies),
                "accuracies": accuracies, "trainable_params": runs[0][1],
            }
            logger.info("bench_lowrank: %s -> %s", method, results["finetune"][method])
        results["overhead"] = _overheads(pretrained, data)
        results["num_threads"] = 1
    finally:
        torch.set_num_threads(threads)
    atomic_write_text(Path(out_dir) / "lowrank.md", _markdown(results))
    return results
