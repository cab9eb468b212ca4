"""Reuse common_regs regularizers in your own torch model: SORSA adapters + their orthonormality penalty.

Run: ``python docs/examples/reuse_regularizer.py``. The regularizer-specific part is the marked block (≤ 10 lines);
everything else is an ordinary PyTorch model and data.
"""

from __future__ import annotations

import torch
from torch import nn

torch.manual_seed(0)
x = torch.randn(256, 16)
y = (x[:, :4].sum(1) > 0).long()
model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 2))  # your model

# --- reuse a regularizer: the whole integration --------------------------------------------------------------
from common_regs.lowrank import SORSA, SorsaOrthonormalPenalty  # noqa: E402
from common_regs.training import fit  # noqa: E402

# adapter + its penalty; at weight 0.1 the factors stay orthonormal (penalty 0.01 after training, 8 at weight 0)
hooks = [SORSA(rank=4, exclude=["2"]), SorsaOrthonormalPenalty(weight=0.1)]
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)  # fit adds the adapter factors to it
losses = fit(model, optimizer, lambda: [(x, y)], lambda b: model(b[0]),
             lambda out, b: nn.functional.cross_entropy(out, b[1]), hooks=hooks, epochs=100)
hooks[0].merge()  # bake the adapters into plain weights for inference
# ------------------------------------------------------------------------------------------------------------------

accuracy = float((model(x).argmax(1) == y).float().mean())
print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f}, train accuracy {accuracy:.3f}")
