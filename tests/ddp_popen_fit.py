"""Run by tests/test_ddp.py as a plain script: Lightning's "ddp" launcher re-runs it for rank 1."""

import hashlib
import json
import sys

import lightning as L

from lightning_prune import Geometric, Latency, Pruning
from lightning_prune.data import DigitsDataModule
from lightning_prune.models import Classifier

if __name__ == "__main__":
    out_dir, budget = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "units"
    L.seed_everything(0)
    schedule = (Geometric(target=0.5, per_cycle=0.3, warmup_epochs=1) if budget == "units" else  # a latency table: rank 0's
                Geometric(target=0.3, per_cycle=0.2, warmup_epochs=1, budget=Latency(batch_size=256, levels=3, min_run_time=0.01)))
    pruning = Pruning(criterion="l2", granularity="neuron", schedule=schedule, verbose=False)
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", devices=2, strategy="ddp", callbacks=[pruning],
                        enable_progress_bar=False, logger=False, enable_checkpointing=False,
                        enable_model_summary=False, limit_train_batches=3, limit_val_batches=1)
    model = Classifier("lenet_300_100", input_shape=(1, 8, 8))
    trainer.fit(model, DigitsDataModule(batch_size=32))
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()
    shapes = {name: list(p.shape) for name, p in model.named_parameters()}
    with open(f"{out_dir}/popen_rank{trainer.global_rank}.json", "w") as handle:
        json.dump({"shapes": shapes, "digest": digest, "latency": pruning.state_dict()["latency"]}, handle)
