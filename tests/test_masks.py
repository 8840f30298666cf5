import copy
import pickle

import pytest
import torch
from torch import nn

from lightning_prune.masks import MaskEnforcer, apply_masks, check_masks, count_kept


def _model_and_masks(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    masks = {"0.weight": torch.rand(16, 8) > 0.7, "2.weight": torch.rand(4, 16) > 0.5}
    return model, masks


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
        lambda p: torch.optim.Adam(p, lr=0.05),
        lambda p: torch.optim.AdamW(p, lr=0.05, amsgrad=True),
    ],
    ids=["sgd-momentum", "sgd-nesterov", "adam", "adamw-amsgrad"],
)
def test_pruned_weights_and_optimizer_state_stay_zero(make_optimizer):
    model, masks = _model_and_masks()
    optimizer = make_optimizer(model.parameters())
    enforcer = MaskEnforcer(model, masks)
    apply_masks(model, masks)
    enforcer.attach([optimizer], state=True)
    for _ in range(5):
        optimizer.zero_grad()
        model(torch.randn(32, 8)).pow(2).mean().backward()
        optimizer.step()
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        assert torch.all(params[name][~mask] == 0)
        assert torch.any(params[name][mask] != 0)
        for value in optimizer.state[params[name]].values():
            if torch.is_tensor(value) and value.shape == mask.shape:
                assert torch.all(value[~mask] == 0)
    enforcer.detach()
    optimizer.zero_grad()
    model(torch.randn(32, 8)).pow(2).mean().backward()
    optimizer.step()
    assert torch.any(params["0.weight"][~masks["0.weight"]] != 0)  # detached: no longer enforced


@pytest.mark.parametrize("make_optimizer", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
    lambda p: torch.optim.AdamW(p, lr=0.05, amsgrad=True),
], ids=["sgd-nesterov-wd", "adamw-amsgrad"])
def test_weights_only_enforcement_keeps_pruned_weights_zero(make_optimizer):
    model, masks = _model_and_masks(1)
    optimizer = make_optimizer(model.parameters())
    enforcer = MaskEnforcer(model, masks)
    apply_masks(model, masks)
    enforcer.attach([optimizer])  # weights only
    for _ in range(5):
        optimizer.zero_grad()
        model(torch.randn(32, 8)).pow(2).mean().backward()
        optimizer.step()
        params = dict(model.named_parameters())
        assert all(torch.all(params[n][~m] == 0) for n, m in masks.items())
    enforcer.enforce([optimizer])  # and the state, when asked
    for name, mask in masks.items():
        for value in optimizer.state[params[name]].values():
            if torch.is_tensor(value) and value.shape == mask.shape:
                assert torch.all(value[~mask] == 0)


def test_masked_model_keeps_its_state_dict_keys_and_copies():
    model, masks = _model_and_masks()
    keys = list(model.state_dict())
    apply_masks(model, masks)
    assert list(model.state_dict()) == keys
    clone = copy.deepcopy(model)
    pickle.loads(pickle.dumps(model))
    x = torch.randn(3, 8)
    assert torch.equal(clone(x), model(x))
    assert count_kept(masks) == (sum(int(m.sum()) for m in masks.values()), 16 * 8 + 4 * 16)


def test_check_masks_names_the_bad_parameter():
    model, masks = _model_and_masks()
    with pytest.raises(ValueError, match="'9.weight'"):
        check_masks(model, {"9.weight": torch.ones(2, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"Mask for '0.weight' has shape \(8, 16\)"):
        check_masks(model, {"0.weight": torch.ones(8, 16, dtype=torch.bool)})
