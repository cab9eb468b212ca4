"""Self-Tuning Networks: a structured best-response hypernetwork tunes a regularization hyperparameter online."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from common_regs.api import ConfigFromKeys
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["STNLinear", "SelfTuningNetwork"]


class STNLinear(nn.Module):
    """ST-Linear layer: ``y = W_e x + b_e + (W_h x + b_h) ⊙ (V λ̃ + c)`` with hyperparameters λ̃ (MacKay et al., Eq. 9).

    The elementary weights (W_e, b_e) are shared; the hyperparameter-dependent part is a per-unit gate, so the
    layer represents a best-response approximation ``w*(λ) ≈ W_e + diag(Vλ̃ + c) W_h`` with few extra parameters.
    """

    def __init__(self, in_features: int, out_features: int, num_hparams: int) -> None:
        super().__init__()
        self.elementary = nn.Linear(in_features, out_features)
        self.hyper = nn.Linear(in_features, out_features)
        self.gate = nn.Linear(num_hparams, out_features)
        nn.init.zeros_(self.hyper.weight)
        nn.init.zeros_(self.hyper.bias)

    def forward(self, x: Tensor, hparams: Tensor) -> Tensor:
        return self.elementary(x) + self.hyper(x) * self.gate(hparams)

    def effective_weight(self, hparams: Tensor) -> tuple[Tensor, Tensor]:
        """``(W_e + diag(g) W_h, b_e + g ⊙ b_h)`` with ``g = Vλ̃ + c`` for one hyperparameter vector (H,)."""
        g = self.gate(hparams)
        return self.elementary.weight + g[:, None] * self.hyper.weight, self.elementary.bias + g * self.hyper.bias


@register("self_tuning_network", kind="solver", seed=55,
          fidelity="paper-equation",
          verified_by="tests/common_regs/dynamics/test_stn_and_diagnostics.py"
                      "::test_stn_tunes_ridge_strength_toward_the_validation_optimum",
          paper="MacKay, Vicol, Lorraine, Duvenaud, Grosse, Self-Tuning Networks: Bilevel Optimization of "
                "Hyperparameters using Structured Best-Response Functions, ICLR 2019, arXiv:1903.03088")
class SelfTuningNetwork(ConfigFromKeys):
    r"""Alternating bilevel optimizer for a model built from :class:`STNLinear` layers and its hyperparameters.

    Train steps fit the weights for hyperparameters sampled around the current value (so the gated layers learn
    the local best response); validation steps move the hyperparameters (and the sampling scale σ, with an
    entropy bonus) by differentiating the validation loss through that best response. Use it to tune a
    regularization strength online, in a single training run.

    Reference:
        Matthew MacKay, Paul Vicol, Jon Lorraine, David Duvenaud, Roger Grosse, "Self-Tuning Networks: Bilevel
        Optimization of Hyperparameters using Structured Best-Response Functions", ICLR 2019, arXiv:1903.03088
        (§4, Alg. 1). Defaults T_train, T_val, τ are from memory of the paper, not re-checked (unconfirmed).

    Math:
        .. math::
            \phi \leftarrow \phi - \alpha\nabla_\phi \mathcal L_{train}(\lambda + \sigma\epsilon, \phi),
            \qquad (\lambda, \sigma) \leftarrow (\lambda, \sigma) - \beta\nabla\big[\mathcal L_{val}
            (\lambda + \sigma\epsilon, \phi) - \tau \textstyle\sum\log\sigma\big]

        with ε ~ N(0, I); T_train weight steps per T_val hyperparameter steps.

    Args:
        model: module whose forward takes ``(x, hparams)``; its parameters are the weights φ.
        init_hparams: initial unconstrained hyperparameters λ (H,). Required.
        lr: weight learning rate α (Adam). Default 1e-2 (regkit toy).
        hyper_lr: hyperparameter learning rate β (Adam). Default 3e-2 (regkit toy).
        config: dict with ``train_steps`` (T_train, default 5), ``val_steps`` (T_val, default 1), ``entropy_weight``
            (τ, default 1e-3), ``init_scale`` (σ₀, default 0.5); defaults recalled from the paper, unconfirmed.

    Shape:
        hparams (H,), broadcast to the batch by the model.

    Returns:
        :meth:`step` returns ``{"train_loss", "val_loss", "hparams", "scale"}`` as floats.

    Note:
        ``train_loss(h)`` must include the regularizer driven by h; ``val_loss(h)`` must not.

    Example:
        >>> import torch
        >>> layer = STNLinear(3, 1, 1)
        >>> layer(torch.ones(4, 3), torch.zeros(1)).shape
        torch.Size([4, 1])
    """

    config_keys: ClassVar[tuple[str, ...]] = ("init_hparams", "lr", "hyper_lr", "config")
    runtime_keys: ClassVar[tuple[str, ...]] = ("model",)
    citation: ClassVar[str] = (
        "@inproceedings{mackay2019self, title={Self-Tuning Networks: Bilevel Optimization of Hyperparameters using "
        "Structured Best-Response Functions}, author={MacKay, Matthew and Vicol, Paul and Lorraine, Jon and Duvenaud, "
        "David and Grosse, Roger}, booktitle={ICLR}, year={2019}}"
    )
    _defaults: ClassVar[dict[str, float]] = {"train_steps": 5, "val_steps": 1, "entropy_weight": 1e-3,
                                             "init_scale": 0.5}

    def __init__(self, model: nn.Module, init_hparams: list[float], lr: float = 1e-2, hyper_lr: float = 3e-2,
                 config: dict[str, float] | None = None) -> None:
        unknown = set(config or {}) - set(self._defaults)
        if unknown:
            raise ValueError(f"`config` keys must be among {sorted(self._defaults)}, got unknown {sorted(unknown)}.")
        self.config = {**self._defaults, **(config or {})}
        if self.config["train_steps"] < 1 or self.config["val_steps"] < 1:
            raise ValueError(f"`train_steps` and `val_steps` must be >= 1, got {self.config}.")
        self.model, self.init_hparams, self.lr, self.hyper_lr = model, list(init_hparams), float(lr), float(hyper_lr)
        self.hparams = nn.Parameter(torch.tensor(self.init_hparams, dtype=torch.get_default_dtype()))
        log_scale0 = float(torch.tensor(self.config["init_scale"]).log())
        self.log_scale = nn.Parameter(torch.full_like(self.hparams, log_scale0))
        self.weight_opt = torch.optim.Adam(model.parameters(), lr=self.lr)
        self.hyper_opt = torch.optim.Adam([self.hparams, self.log_scale], lr=self.hyper_lr)

    @classmethod
    def example_kwargs(cls) -> dict[str, Any]:
        return {"model": nn.Linear(3, 1), "init_hparams": [0.5], "config": {"train_steps": 2}}

    def _perturbed(self, detach: bool) -> Tensor:
        eps = torch.randn_like(self.hparams)
        sample = self.hparams + self.log_scale.exp() * eps
        return sample.detach() if detach else sample

    def step(self, train_loss: Callable[[Tensor], Tensor], val_loss: Callable[[Tensor], Tensor]) -> dict[str, Any]:
        """One round: ``train_steps`` weight updates then ``val_steps`` hyperparameter updates."""
        for _ in range(int(self.config["train_steps"])):
            loss = train_loss(self._perturbed(detach=True))
            self.weight_opt.zero_grad()
            loss.backward()
            self.weight_opt.step()
        for _ in range(int(self.config["val_steps"])):
            v = val_loss(self._perturbed(detach=False))
            objective = v - self.config["entropy_weight"] * self.log_scale.sum()
            self.hyper_opt.zero_grad()
            self.weight_opt.zero_grad()
            objective.backward()
            self.hyper_opt.step()
        return {"train_loss": float(loss.detach()), "val_loss": float(v.detach()),
                "hparams": self.hparams.detach().tolist(), "scale": self.log_scale.detach().exp().tolist()}

    def state_dict(self) -> dict[str, Any]:
        return {"hparams": self.hparams.detach().clone(), "log_scale": self.log_scale.detach().clone(),
                "model": self.model.state_dict(), "weight_opt": self.weight_opt.state_dict(),
                "hyper_opt": self.hyper_opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.hparams.copy_(state["hparams"])
            self.log_scale.copy_(state["log_scale"])
        self.model.load_state_dict(state["model"])
        self.weight_opt.load_state_dict(state["weight_opt"])
        self.hyper_opt.load_state_dict(state["hyper_opt"])
