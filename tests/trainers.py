"""The tests' tiny real Trainer and the modules several test files fit, importable by name (a module
named ``conftest`` is ambiguous: the teacher's folder ``course/teacher`` has one too, for nbval)."""

from functools import partial

import torch.nn.functional as F

from lightning_prune.models import Classifier
from lightning_prune.teaching import quiet_trainer

#: ``quiet_trainer(max_epochs, callbacks=(), **overrides)``: the course's deterministic CPU Trainer
#: without progress bar, logger or checkpoints, but with Lightning's sanity check of two validation
#: batches (the callbacks' validation hooks run before training, as in a user's default Trainer).
make_trainer = partial(quiet_trainer, num_sanity_val_steps=2)


class ManualClassifier(Classifier):
    """LeNet-300-100 on 8x8 digits with one SGD optimizer stepped by hand (``automatic_optimization=False``)."""

    def __init__(self):
        super().__init__("lenet_300_100", input_shape=(1, 8, 8), optimizer="sgd", lr=0.5)
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        optimizer = self.optimizers()
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        return loss
