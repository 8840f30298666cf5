"""Real DDP on CPU (two gloo processes): statistics reduced across ranks, identical masks everywhere."""

import hashlib
import json

import lightning as L
import pytest
import torch

from lightning_prune import Geometric, Neurons, OneShot, Pruning
from lightning_prune.criteria import APoZ, Taylor
from lightning_prune.data import DigitsDataModule
from lightning_prune.models import Classifier
from lightning_prune.structure import remove_zeroed_units


class RecordingAPoZ(APoZ):
    """APoZ that also writes, per rank, the inputs it saw, the layers' weights and its scores."""

    def __init__(self, out_dir, batches):
        super().__init__(batches=batches)
        self.out_dir, self.seen, self.rank_handle = out_dir, [], None

    def begin(self, layers, sites):
        super().begin(layers, sites)
        self.seen = []
        self.rank_handle = layers[0].module.register_forward_pre_hook(lambda m, args: self.seen.append(args[0].clone()))

    def end(self):
        super().end()
        if self.rank_handle is not None:
            self.rank_handle.remove()

    def scores(self, layers, granularity, cycle):
        scores = super().scores(layers, granularity, cycle)
        rank = torch.distributed.get_rank()
        torch.save(
            {
                "inputs": torch.cat(self.seen),
                "layers": {layer.name: {k: v.clone() for k, v in layer.module.state_dict().items()} for layer in layers},
                "scores": scores,
            },
            f"{self.out_dir}/scores_rank{rank}_cycle{cycle}.pt",
        )
        return scores


class MaskChecksums(L.Callback):
    def __init__(self, pruning, out_dir):
        self.pruning, self.out_dir = pruning, out_dir

    def on_train_end(self, trainer, pl_module):
        digest = hashlib.sha256()
        for key in sorted(self.pruning.keep):
            digest.update(self.pruning.keep[key].numpy().tobytes())
        params = {n: p.detach() for n, p in pl_module.named_parameters()}
        zeros = all(torch.all(params[n][~m] == 0) for n, m in self.pruning._masks.items())
        payload = {"keep": digest.hexdigest(), "masked_zero": bool(zeros), "history": len(self.pruning.history)}
        with open(f"{self.out_dir}/rank{trainer.global_rank}.json", "w") as handle:
            json.dump(payload, handle)


@pytest.mark.parametrize("granularity", ["neuron", "weight"])
def test_ddp_ranks_agree_and_apoz_equals_one_process_over_the_same_data(tmp_path, granularity):
    L.seed_everything(0)
    criterion = RecordingAPoZ(tmp_path, batches=3) if granularity == "neuron" else "l1"
    pruning = Pruning(criterion=criterion, granularity=granularity,
                      schedule=Geometric(target=0.5, per_cycle=0.3, warmup_epochs=1))
    trainer = L.Trainer(
        max_epochs=3, accelerator="cpu", devices=2, strategy="ddp_spawn", callbacks=[pruning, MaskChecksums(pruning, tmp_path)],
        enable_progress_bar=False, logger=False, enable_checkpointing=False, enable_model_summary=False,
        limit_train_batches=4, limit_val_batches=1,
    )
    model = Classifier("lenet_300_100", input_shape=(1, 8, 8))
    trainer.fit(model, DigitsDataModule(batch_size=32))

    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0] == ranks[1]  # identical masks (checksums) and history on both ranks
    assert ranks[0]["masked_zero"] and ranks[0]["history"] == 2
    # The main process receives rank 0's weights: still dense-shaped, with the pruned entries zero.
    assert sum(int((p == 0).sum()) for p in model.parameters()) > 0
    if granularity == "weight":
        return
    # ... and removing the zeroed neurons there gives the compact model, computing the same function.
    x = torch.randn(5, 1, 8, 8)
    model.eval()
    before, dense_params = model(x), sum(p.numel() for p in model.parameters())
    removal = remove_zeroed_units(model, x[:2])
    assert removal and sum(p.numel() for p in model.parameters()) < 0.6 * dense_params
    assert torch.allclose(model(x), before, atol=1e-5)
    for cycle in range(2):
        records = [torch.load(tmp_path / f"scores_rank{r}_cycle{cycle}.pt") for r in range(2)]
        assert not torch.equal(records[0]["inputs"], records[1]["inputs"])  # each rank saw its own shard
        assert all(record["inputs"].shape[0] == 3 * 32 for record in records)  # APoZ(batches=3) batches of 32
        inputs = torch.cat([record["inputs"] for record in records])  # the global calibration data
        layers = records[0]["layers"]
        first, second = layers["model.features.0"], layers["model.features.2"]
        hidden1 = torch.relu(inputs @ first["weight"].T + first["bias"])
        hidden2 = torch.relu(hidden1 @ second["weight"].T + second["bias"])
        for record in records:
            assert torch.allclose(record["scores"]["model.features.0"], (hidden1 != 0).double().mean(0))
            assert torch.allclose(record["scores"]["model.features.2"], (hidden2 != 0).double().mean(0))


def test_ranks_with_different_masks_fail_loudly():
    from types import SimpleNamespace

    from lightning_prune.distributed import check_ranks_agree

    class DisagreeingStrategy:  # what all_gather would return if rank 1 held other masks
        root_device = torch.device("cpu")

        def all_gather(self, tensor):
            return torch.stack([tensor, tensor + 1])

    trainer = SimpleNamespace(world_size=2, strategy=DisagreeingStrategy())
    with pytest.raises(RuntimeError, match=r"masks differ between rank 0 and ranks \[1\]"):
        check_ranks_agree(trainer, {"fc": torch.ones(3, dtype=torch.bool)})


@pytest.mark.parametrize("budget", ["units", "latency"])
def test_popen_ddp_removes_the_same_neurons_on_every_rank_when_the_fit_ends(tmp_path, budget):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).with_name("ddp_popen_fit.py")
    done = subprocess.run([sys.executable, str(script), str(tmp_path), budget], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"popen_rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0] == ranks[1]  # identical compact models (shapes and weights) on both ranks, and latency tables
    assert (ranks[0]["latency"] is None) == (budget == "units")  # a latency table is measured on rank 0, broadcast
    dense = {n: list(p.shape) for n, p in Classifier("lenet_300_100").named_parameters()}
    assert ranks[0]["shapes"] != dense
    assert sum(torch.Size(s).numel() for s in ranks[0]["shapes"].values()) < (0.6 if budget == "units" else 1.0) * sum(
        torch.Size(s).numel() for s in dense.values())


class RecordingTaylor(Taylor):
    """Taylor that also writes, per rank, each calibration batch, the model weights and its scores."""

    def __init__(self, out_dir, model_ref, batches):
        super().__init__(batches=batches)
        self.out_dir, self.model_ref, self.inputs = out_dir, model_ref, []

    def begin(self, layers, sites):
        super().begin(layers, sites)
        self.inputs = []
        self.handle = self.model_ref[0].register_forward_pre_hook(lambda m, args: self.inputs.append(args[0].clone()))

    def end(self):
        super().end()
        self.handle.remove()

    def scores(self, layers, granularity, cycle):
        scores = super().scores(layers, granularity, cycle)
        rank = torch.distributed.get_rank()
        torch.save({"batches": self.inputs, "state": {k: v.clone() for k, v in self.model_ref[0].state_dict().items()},
                    "scores": scores}, f"{self.out_dir}/taylor_rank{rank}.pt")
        return scores


class AttachModel(L.Callback):
    def __init__(self, holder):
        self.holder = holder

    def setup(self, trainer, pl_module, stage):
        self.holder.append(pl_module)


def test_ddp_taylor_scores_equal_one_process_over_the_same_batches(tmp_path):
    L.seed_everything(0)
    holder = []
    pruning = Pruning(criterion=RecordingTaylor(tmp_path, holder, batches=2), granularity=Neurons(remove=False),
                      schedule=OneShot(target=0.3, warmup_epochs=1))
    trainer = L.Trainer(
        max_epochs=2, accelerator="cpu", devices=2, strategy="ddp_spawn", callbacks=[AttachModel(holder), pruning],
        enable_progress_bar=False, logger=False, enable_checkpointing=False, enable_model_summary=False,
        limit_train_batches=3, limit_val_batches=1,
    )
    trainer.fit(Classifier("lenet_300_100", input_shape=(1, 8, 8)), DigitsDataModule(batch_size=32))
    records = [torch.load(tmp_path / f"taylor_rank{r}.pt") for r in range(2)]
    assert [len(record["batches"]) for record in records] == [2, 2]  # Taylor(batches=2) on each rank
    model = Classifier("lenet_300_100", input_shape=(1, 8, 8))
    model.load_state_dict(records[0]["state"])
    model.eval()
    # The calibration batches are (x, y) tuples; the pre-hook saw x only, so recompute y from the data.
    data = DigitsDataModule(batch_size=32)
    data.setup()
    train_x, train_y = data.splits["train"].tensors
    lookup = {tuple(x.flatten().tolist()): int(y) for x, y in zip(train_x, train_y)}
    weights = {name: dict(model.named_parameters())[f"{name}.weight"] for name in ("model.features.0", "model.features.2")}
    total = {name: torch.zeros_like(w, dtype=torch.float64) for name, w in weights.items()}
    for record in records:
        for x in record["batches"]:
            y = torch.tensor([lookup[tuple(row.flatten().tolist())] for row in x])
            loss = torch.nn.functional.cross_entropy(model(x), y)
            grads = torch.autograd.grad(loss, list(weights.values()))
            for (name, w), g in zip(weights.items(), grads):
                total[name] += (w * g).double()
    for record in records:
        for name in weights:
            assert torch.allclose(record["scores"][name], total[name].sum(1).abs(), atol=1e-6)
