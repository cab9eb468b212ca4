"""Dynamic Sparse Learning (common_regs/sparsity/dsl.py): exact budget, prune/grow rule, optimizer state, resume."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from common_regs.api import TrainContext
from common_regs.registry import build
from common_regs.sparsity.dsl import DSL, erk_densities, prune_and_grow, ranked_indices, update_count
from common_regs.sparsity.sparse_table import load_sparse_tables, memory_report, save_sparse_tables, to_sparse_table
from common_regs.training import fit


class _Net(nn.Module):
    """An embedding table, an EmbeddingBag table and a dense layer: every tensor kind DSL must handle."""

    def __init__(self) -> None:
        super().__init__()
        self.users = nn.Embedding(40, 8)
        self.items = nn.EmbeddingBag(24, 8, mode="sum")
        self.head = nn.Linear(8, 4)

    def forward(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        users, items = batch
        return self.head(self.users(users) * self.items(items))


def _batch(step: int) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    return (torch.randint(0, 40, (16,), generator=g), torch.randint(0, 24, (16, 3), generator=g)), torch.randn(
        16, 4, generator=g
    )


def _train_step(model: nn.Module, sched: DSL, opt: torch.optim.Optimizer, step: int) -> None:
    inputs, target = _batch(step)
    loss = ((model(inputs) - target) ** 2).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step(TrainContext(model=model, step=step, optimizer=opt))


def _setup(seed: int = 0, optimizer: str = "adam", **kwargs):
    torch.manual_seed(seed)
    model = _Net()
    opt = {
        "adam": lambda p: torch.optim.Adam(p, lr=1e-2),
        "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
        "adagrad": lambda p: torch.optim.Adagrad(p, lr=1e-1),
        "sgd": lambda p: torch.optim.SGD(p, lr=1e-1, momentum=0.9),
    }[optimizer](model.parameters())
    config = {"density": 0.25, "update_interval": 3, "total_steps": 30, **kwargs}
    sched = DSL(**config)
    sched.prepare(model, opt)
    return model, sched, opt


# ------------------------------------------------------------------------------------------------ budget
@pytest.mark.parametrize("distribution", ["uniform", "erk"])
def test_density_exact_after_init_and_after_every_update(distribution: str) -> None:
    model, sched, opt = _setup(distribution=distribution)
    assert set(sched.masks) == {"users.weight", "items.weight", "head.weight"}  # biases stay dense
    if distribution == "uniform":  # every numel is a multiple of 4: density 0.25 is exact
        expected = {"users.weight": 80, "items.weight": 48, "head.weight": 8}
    else:
        shapes = {name: tuple(m.shape) for name, m in sched.masks.items()}
        d = erk_densities(shapes, 0.25)
        expected = {name: round(d[name] * sched.masks[name].numel()) for name in shapes}
    assert sched.budget == expected
    total = sum(expected.values())
    for name, mask in sched.masks.items():
        assert int(mask.sum()) == expected[name]
    previous = {n: m.clone() for n, m in sched.masks.items()}
    changed_updates = 0
    for step in range(12):
        _train_step(model, sched, opt, step)
        assert sched.active_parameters() == total
        for name, mask in sched.masks.items():
            assert torch.all((mask == 0) | (mask == 1))
            assert int(mask.sum()) == expected[name], f"{name}: budget changed at step {step}"
            assert int((sched.effective(name) != 0).sum()) <= expected[name]
        changed_updates += any(not torch.equal(previous[n], m) for n, m in sched.masks.items())
        previous = {n: m.clone() for n, m in sched.masks.items()}
    assert [h["step"] for h in sched.history] == [3.0, 6.0, 9.0, 12.0]
    assert changed_updates == 4  # every update moved some entries


def test_budget_violation_raises() -> None:
    _, sched, _ = _setup()
    sched.masks["head.weight"].view(-1)[0] = 1.0 - sched.masks["head.weight"].view(-1)[0]
    with pytest.raises(RuntimeError, match="budget violated"):
        sched.check_budget()


def test_erk_matches_closed_form_and_global_budget() -> None:
    shapes = {"a": (100, 10), "b": (10, 10)}
    d = erk_densities(shapes, 0.2)
    # ε from Σ_l ε (Σn/Πn) |W_l| = 0.2 Σ|W_l|:  ε (110 + 20) = 0.2 · 1100
    eps = 0.2 * 1100 / (110 + 20)
    assert d["a"] == pytest.approx(eps * 110 / 1000)
    assert d["b"] == pytest.approx(eps * 20 / 100)
    assert d["a"] * 1000 + d["b"] * 100 == pytest.approx(0.2 * 1100)
    # A tensor whose density would exceed 1 becomes dense and the rest takes the remaining budget.
    capped = erk_densities({"big": (1000, 1000), "tiny": (2, 2)}, 0.5)
    assert capped["tiny"] == 1.0
    assert capped["big"] * 1e6 + 4 == pytest.approx(0.5 * (1e6 + 4))


# ------------------------------------------------------------------------------------------------ update rule
def test_prune_picks_smallest_magnitudes_and_grow_largest_gradients() -> None:
    weight = torch.tensor([[0.9, -0.1, 0.0, 0.0], [-2.0, 0.05, 0.0, 0.0], [0.3, -0.7, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]])
    grad = torch.tensor([[0.0, 0.0, 0.2, -5.0], [0.0, 9.0, 0.01, 0.4], [0.0, 0.0, -3.0, 0.1]])
    new, pruned, grown = prune_and_grow(weight, grad, mask, 2, regrow_pruned=False)
    assert set(pruned.tolist()) == {1, 5}  # |-0.1| and |0.05|: the two smallest active magnitudes
    assert set(grown.tolist()) == {3, 10}  # |-5| and |-3|: the two largest gradients among inactive entries
    assert int(new.sum()) == int(mask.sum())
    # With the official code's rule a just-pruned entry with a large gradient (entry 5, |g| = 9) comes right back.
    new_code, pruned_code, grown_code = prune_and_grow(weight, grad, mask, 2, regrow_pruned=True)
    assert set(pruned_code.tolist()) == {1, 5} and set(grown_code.tolist()) == {5, 3}
    assert new_code.view(-1)[5] == 1 and new_code.view(-1)[1] == 0
    with pytest.raises(ValueError, match="count"):
        prune_and_grow(weight, grad, mask, 7)


def test_ranked_indices_break_ties_at_random_but_reproducibly() -> None:
    scores = torch.zeros(1000)
    scores[7] = 1.0
    a = ranked_indices(scores, 5, largest=True, generator=torch.Generator().manual_seed(0))
    b = ranked_indices(scores, 5, largest=True, generator=torch.Generator().manual_seed(0))
    assert a[0] == 7 and torch.equal(a, b)
    assert a[1:].tolist() != [0, 1, 2, 3]  # not the lowest ids among the zero ties
    assert ranked_indices(scores, 2, largest=True).tolist() == [7, 0]


def test_scheduler_update_on_hand_built_weights_and_ratio_schedule() -> None:
    model = nn.Linear(4, 3, bias=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # leaves the hand-set weights untouched
    sched = DSL(density=0.5, update_interval=2, ratio=0.5, ratio_min=0.1, total_steps=4, regrow_pruned=False)
    sched.prepare(model, opt)
    mask = torch.tensor([[1.0, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]])
    sched.masks["weight"].copy_(mask)
    weight = sched.original("weight")
    with torch.no_grad():
        weight.copy_(torch.tensor([[0.9, -0.1, 0.5, 0.5], [-2.0, 0.05, 0.5, 0.5], [0.3, -0.7, 0.5, 0.5]]))
    weight.grad = torch.tensor([[0.0, 0.0, 0.2, -5.0], [0.0, 9.0, 0.01, 0.4], [0.0, 0.0, -3.0, 0.1]])
    sched.step(None)  # step 1: no update, masks re-applied
    assert torch.equal(sched.masks["weight"], mask)
    assert torch.all(weight.detach()[mask == 0] == 0)
    opt.step()
    sched.step(None)  # step 2: update with r_2 = 0.1 + 0.4 · (1 + cos(π/2)) / 2 = 0.3
    r = 0.1 + 0.4 * 0.5 * (1 + math.cos(math.pi * 2 / 4))
    assert sched.history[-1]["ratio"] == pytest.approx(r)
    count = math.ceil(r * 6)
    assert count == update_count(6, 12, r) == 2
    expected = mask.clone().view(-1)
    expected[[1, 5]] = 0
    expected[[3, 10]] = 1
    assert torch.equal(sched.masks["weight"].view(-1), expected)
    w = weight.detach().view(-1)
    assert w[3] == 0 and w[10] == 0  # regrown weights start at zero
    assert w[1] == 0 and w[5] == 0
    torch.testing.assert_close(w[[0, 4, 8, 9]], torch.tensor([0.9, -2.0, 0.3, -0.7]))


def test_ratio_cosine_closed_form() -> None:
    sched = DSL(density=0.5, ratio=0.5, ratio_min=0.005, total_steps=100)
    for t in (0, 25, 50, 100, 150):
        sched.steps_done = t
        r = 0.005 + (0.5 - 0.005) * 0.5 * (1 + math.cos(math.pi * min(t, 100) / 100))
        assert sched.current_ratio() == pytest.approx(r)


# ------------------------------------------------------------------------------------------------ optimizer state
@pytest.mark.parametrize("optimizer", ["adam", "adamw", "adagrad", "sgd"])
def test_optimizer_state_zero_at_pruned_entries(optimizer: str) -> None:
    model, sched, opt = _setup(optimizer=optimizer)
    for step in range(7):
        _train_step(model, sched, opt, step)
        for name, mask in sched.masks.items():
            raw = sched.original(name)
            assert torch.all(raw.detach()[mask == 0] == 0), f"{name}: pruned raw weight not zero"
            moments = [v for v in opt.state[raw].values() if torch.is_tensor(v) and v.shape == raw.shape]
            assert moments, f"{optimizer} keeps no per-entry state for {name}"
            for moment in moments:
                assert torch.all(moment[mask == 0] == 0), f"{name}: {optimizer} state not zero at pruned entries"


def test_regrown_entries_start_with_zero_weight_and_zero_state() -> None:
    model, sched, opt = _setup()
    for step in range(2):
        _train_step(model, sched, opt, step)
    before = {n: m.clone() for n, m in sched.masks.items()}
    _train_step(model, sched, opt, 2)  # step 3 is an update
    assert len(sched.history) == 1
    for name, mask in sched.masks.items():
        grown = (mask == 1) & (before[name] == 0)
        assert grown.any()
        raw = sched.original(name)
        assert torch.all(raw.detach()[grown] == 0)
        for moment in (opt.state[raw]["exp_avg"], opt.state[raw]["exp_avg_sq"]):
            assert torch.all(moment[grown] == 0)


# ------------------------------------------------------------------------------------------------ checkpoints
def test_resume_from_checkpoint_continues_with_identical_masks(tmp_path) -> None:
    model, sched, opt = _setup()
    for step in range(4):
        _train_step(model, sched, opt, step)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "dsl": sched.state_dict()}, path)
    for step in range(4, 11):  # the uninterrupted run crosses updates at steps 6 and 9
        _train_step(model, sched, opt, step)

    fresh_model, fresh_sched, fresh_opt = _setup(seed=5)  # different init and masks: all must come from the file
    checkpoint = torch.load(path, weights_only=False)
    fresh_model.load_state_dict(checkpoint["model"])
    fresh_opt.load_state_dict(checkpoint["optimizer"])
    fresh_sched.load_state_dict(checkpoint["dsl"])
    for step in range(4, 11):
        _train_step(fresh_model, fresh_sched, fresh_opt, step)
    for name, mask in sched.masks.items():
        assert torch.equal(fresh_sched.masks[name], mask), f"{name}: masks diverged after resume"
    for (key, value), (key2, value2) in zip(model.state_dict().items(), fresh_model.state_dict().items(), strict=True):
        assert key == key2
        torch.testing.assert_close(value2, value, rtol=0, atol=0)
    assert fresh_sched.history == sched.history


def test_resume_with_another_density_is_rejected() -> None:
    _, sched, _ = _setup()
    _, other, _ = _setup(density=0.5)
    with pytest.raises(ValueError, match="budget"):
        other.load_state_dict(sched.state_dict())


# ------------------------------------------------------------------------------------------------ integration
def test_trains_through_reghooks_fit_and_learns() -> None:
    torch.manual_seed(0)
    users, items = torch.randn(30, 4), torch.randn(20, 4)
    target = users @ items.T  # a rank-4 matrix to factorize with 8-dim sparse embeddings
    model = nn.ModuleDict({"u": nn.Embedding(30, 8), "i": nn.Embedding(20, 8)})
    sched = DSL(density=0.5, update_interval=15, total_steps=150)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = fit(
        model,
        opt,
        lambda: [None],
        lambda _: model["u"].weight @ model["i"].weight.T,
        lambda out, _: ((out - target) ** 2).mean(),
        hooks=[sched],
        epochs=150,
    )
    assert losses[-1] < 0.1 * losses[0]
    assert sched.active_parameters() == 0.5 * (30 * 8 + 20 * 8)
    assert len(sched.history) == 10


@pytest.mark.torchrec
def test_torchrec_embedding_bag_collection_tables() -> None:
    torchrec = pytest.importorskip("torchrec")
    torch.manual_seed(0)
    ebc = torchrec.EmbeddingBagCollection(
        tables=[
            torchrec.EmbeddingBagConfig(name="t_user", embedding_dim=8, num_embeddings=32, feature_names=["user"]),
            torchrec.EmbeddingBagConfig(name="t_genre", embedding_dim=8, num_embeddings=16, feature_names=["genre"]),
        ],
        device=torch.device("cpu"),
    )
    model = nn.ModuleDict({"ebc": ebc})
    opt = torch.optim.Adagrad(model.parameters(), lr=0.1)
    sched = DSL(density=0.25, update_interval=2, total_steps=10, targets=["*embedding_bags.*.weight"])
    sched.prepare(model, opt)
    assert sched.budget == {"ebc.embedding_bags.t_user.weight": 64, "ebc.embedding_bags.t_genre.weight": 32}
    for step in range(4):
        g = torch.Generator().manual_seed(step)
        kjt = torchrec.KeyedJaggedTensor.from_lengths_sync(
            keys=["user", "genre"],
            values=torch.cat([torch.randint(0, 32, (6,), generator=g), torch.randint(0, 16, (9,), generator=g)]),
            lengths=torch.tensor([1] * 6 + [1, 2, 1, 2, 1, 2]),
        )
        pooled = model["ebc"](kjt)
        loss = ((pooled["user"] + pooled["genre"] - 1.0) ** 2).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        table = sched.original("ebc.embedding_bags.t_user.weight")
        assert (table.grad[sched.masks["ebc.embedding_bags.t_user.weight"] == 0] != 0).any()  # dense STE gradient
        opt.step()
        sched.step(None)
        for name, mask in sched.masks.items():
            assert int(mask.sum()) == sched.budget[name]
            assert torch.all(opt.state[sched.original(name)]["sum"][mask == 0] == 0)
    assert len(sched.history) == 2


def test_config_round_trip_and_validation() -> None:
    sched = DSL(density=0.1, update_interval=7, total_steps=70, distribution="erk", targets=["*.weight"])
    config = sched.get_config_dict()
    assert build({"name": "dsl", **config}).get_config_dict() == config
    for kwargs, match in [
        ({"density": 0.0}, "density"),
        ({"density": 1.5}, "density"),
        ({"update_interval": 0}, "update_interval"),
        ({"ratio": 0.1, "ratio_min": 0.2}, "ratio_min"),
        ({"distribution": "normal"}, "distribution"),
        ({"total_steps": 0}, "total_steps"),
    ]:
        with pytest.raises(ValueError, match=match):
            DSL(**kwargs)
    with pytest.raises(ValueError, match="matches no parameter"):
        DSL(targets=["nothing.*"]).prepare(_Net())


def test_missing_total_steps_and_missing_grad_are_reported() -> None:
    model, sched, opt = _setup(total_steps=None, update_interval=1)
    inputs, target = _batch(0)
    ((model(inputs) - target) ** 2).mean().backward()
    opt.step()
    with pytest.raises(ValueError, match="total_steps"):
        sched.step(TrainContext(model=model))
    model, sched, opt = _setup(total_steps=None, update_interval=1)
    ((model(inputs) - target) ** 2).mean().backward()
    opt.step()
    sched.step(TrainContext(model=model, extras={"total_steps": 10}))  # the trainer may supply T
    assert len(sched.history) == 1
    opt.zero_grad(set_to_none=True)
    with pytest.raises(ValueError, match="grad"):
        sched.step(TrainContext(model=model, extras={"total_steps": 10}))


# ------------------------------------------------------------------------------------------------ export
def test_export_csr_round_trip_lookup_and_memory(tmp_path) -> None:
    model, sched, opt = _setup(density=0.25)
    for step in range(7):
        _train_step(model, sched, opt, step)
    tables = sched.export_sparse()
    for name, table in tables.items():
        dense = sched.effective(name).detach()
        assert table.nnz == sched.budget[name]
        torch.testing.assert_close(table.to_dense(), dense, rtol=0, atol=0)
    users = tables["users.weight"]
    ids = torch.tensor([3, 0, 39, 3])
    torch.testing.assert_close(users.lookup(ids), sched.effective("users.weight").detach()[ids], rtol=0, atol=0)
    query = torch.randn(8, 2)
    torch.testing.assert_close(torch.sparse.mm(users.to_torch(), query), users.to_dense() @ query)
    # bytes: nnz float32 values + nnz int32 column ids + (rows + 1) int32 row pointers
    assert users.nbytes == 80 * 4 + 80 * 4 + 41 * 4
    assert users.dense_nbytes == 40 * 8 * 4
    report = sched.memory_report()
    assert report["nnz"] == sum(sched.budget.values())
    assert report["saving"] == pytest.approx(1 - report["sparse_bytes"] / report["dense_bytes"])
    path = save_sparse_tables(tmp_path / "tables.npz", tables)
    loaded = load_sparse_tables(path)
    assert set(loaded) == set(tables)
    for name, table in tables.items():
        torch.testing.assert_close(loaded[name].to_dense(), table.to_dense(), rtol=0, atol=0)
    assert memory_report(loaded) == report


def test_export_keeps_active_entries_that_are_exactly_zero() -> None:
    weight = torch.tensor([[0.0, 2.0], [3.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    table = to_sparse_table(weight, mask)
    assert table.nnz == 2
    np.testing.assert_array_equal(table.matrix.indptr, [0, 2, 2])
    with pytest.raises(ValueError, match="ids"):
        table.lookup(torch.tensor([2]))


def test_state_dict_is_a_deep_copy() -> None:
    model, sched, opt = _setup()
    state = copy.deepcopy(sched.state_dict())
    _train_step(model, sched, opt, 0)
    assert state["extra"]["budget"] == sched.budget
    assert set(state["masks"]) == set(sched.masks)
