"""Knowledge distillation from the dense model while the pruned one fine-tunes (Hinton et al. 2015).

The lecture's second compression method, used here to recover accuracy after each prune: a frozen
copy of the dense model (the *teacher*) is taken after warm-up, just before the first prune, and
during fine-tuning the loss that ``training_step`` returns gets ``weight * T² * KL(p_teacher ‖ p_student)``
added, both distributions softened by the temperature ``T``.

A callback cannot change a loss, so :class:`DistillationHook` wraps the module's own
``training_step`` (an instance attribute, removed when the fit ends): it records the inputs and the
output of the module's last ``forward`` call inside the step (the student's logits: the tensor, an
output object's ``logits`` such as Hugging Face's ``ModelOutput``, or else its first floating tensor
that is not a scalar), runs the teacher on the same
inputs, and adds the term to the returned loss. The user's ``training_step`` is not rewritten; it
must call ``self(...)`` (``forward``) and return the loss (automatic optimization).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lightning_prune.checkpoint import dense_build
from lightning_prune.compiled import strip_compiled
from lightning_prune.surgery import detached_copy
from lightning_prune.tracing import output_tensors
from lightning_prune.validation import Config, as_float, check_int


class Distillation(Config):
    """Distil the dense teacher into the pruned student during fine-tuning.

    Args:
        weight: Factor of the distillation term added to the loss (> 0).
        temperature: Softmax temperature ``T`` of both models' logits (> 0); the term is scaled
            by ``T²`` so that its gradients keep their size as ``T`` changes (Hinton et al. 2015).
        cycles: The pruning cycles (0-based) whose fine-tuning is distilled; ``None``: every cycle.

    Raises:
        ValueError: Naming the field, for a value that is not allowed.
    """

    def __init__(self, weight: float = 1.0, temperature: float = 4.0, cycles: Sequence[int] | None = None) -> None:
        for name, value in (("weight", weight), ("temperature", temperature)):
            number = as_float(value)
            if number is None or not number > 0 or number == float("inf"):
                raise ValueError(f"`Distillation.{name}` must be a finite number > 0, got {value!r}.")
        self.weight, self.temperature = float(weight), float(temperature)
        if cycles is not None:
            if isinstance(cycles, (str, bytes)) or not isinstance(cycles, Sequence):
                raise ValueError(f"`Distillation.cycles` must be a list of cycle indices or None, got {cycles!r}.")
            cycles = sorted({check_int("Distillation.cycles[...]", cycle, 0) for cycle in cycles})
        self.cycles = cycles

    def active(self, cycles_done: int) -> bool:
        """Whether the fine-tuning after ``cycles_done`` prunes is distilled."""
        return cycles_done > 0 and (self.cycles is None or cycles_done - 1 in self.cycles)


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T² * KL(softmax(teacher / T) ‖ softmax(student / T))``, averaged over the batch (and any positions)."""
    classes = student.shape[-1]
    log_student = F.log_softmax(student.reshape(-1, classes).float() / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher.reshape(-1, classes).float() / temperature, dim=-1)
    return F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean") * temperature**2


def logits_of(output: Any) -> torch.Tensor:
    """The logits in a model's output: the tensor itself, its ``logits`` (a Hugging Face ``ModelOutput``, whose
    first field is the ``loss`` when labels are passed), or else its first floating tensor that is not a scalar.

    Raises:
        ValueError: If the output holds no such tensor.
    """
    if torch.is_tensor(output):
        return output
    logits = output.get("logits") if isinstance(output, Mapping) else getattr(output, "logits", None)
    if torch.is_tensor(logits):
        return logits
    found = next((tensor for tensor in output_tensors(output) if tensor.is_floating_point() and tensor.dim() > 0), None)
    if found is None:
        raise ValueError(f"Distillation needs logits, but forward returned {type(output).__name__} without a tensor.")
    return found


def frozen_teacher(module: nn.Module) -> nn.Module:
    """A frozen copy of ``module`` in eval mode (its trainer shared, not copied), uncompiled.

    ``Trainer.fit(torch.compile(module))`` sets the compiled ``forward`` (and steps) as instance
    attributes that call the *student*; a copy would keep calling it, so the copy gets its class's own.
    """
    teacher = strip_compiled(detached_copy(module))
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


class DistillationHook:
    """Adds the distillation term to the loss ``module.training_step`` returns, while ``active()`` says so.

    Args:
        module: The LightningModule (the student).
        teacher: The frozen dense model, called like ``module``.
        config: The distillation settings.
        active: Whether the current step is distilled.
    """

    def __init__(self, module: nn.Module, teacher: nn.Module, config: Distillation, active: Callable[[], bool]) -> None:
        self.module, self.teacher, self.config, self.active = module, teacher, config, active
        self._seen: tuple[Any, Any, Any] | None = None
        original = module.training_step

        # Closures, not bound methods: a deepcopy of the module (Torch-Pruning's probes) copies
        # functions by reference, so it never reaches the teacher or the recorded tensors.
        def record(hooked: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            if hooked.training:
                self._seen = (args, kwargs, output)

        def training_step(*args: Any, **kwargs: Any) -> Any:
            self._seen = None
            try:
                result = original(*args, **kwargs)
                return self._add(result) if self.active() else result
            finally:
                self._seen = None  # the step's graph is not kept alive

        self._handle = module.register_forward_hook(record, with_kwargs=True)
        module.training_step = training_step

    def _add(self, result: Any) -> Any:
        if self._seen is None:
            raise ValueError(
                "Distillation needs the student's logits, but training_step did not call the module's forward "
                "(self(...)); call it there, or leave out `distill`."
            )
        args, kwargs, output = self._seen
        with torch.no_grad():
            teacher = logits_of(self.teacher(*args, **kwargs))
        term = self.config.weight * distillation_loss(logits_of(output), teacher, self.config.temperature)
        if getattr(self.module, "_trainer", None) is not None:  # also callable outside a fit
            self.module.log("pruning/distillation", term.detach(), on_step=False, on_epoch=True)
        if isinstance(result, dict):
            return {**result, "loss": result["loss"] + term}
        if torch.is_tensor(result):
            return result + term
        raise ValueError(f"Distillation adds to the loss training_step returns; it returned {type(result).__name__}.")

    def remove(self) -> None:
        """Take the hook off and give the module back its own ``training_step``."""
        self._handle.remove()
        self.module.__dict__.pop("training_step", None)


def check_distillable(distill: Distillation | None, automatic_optimization: bool) -> None:
    """Raises: ValueError: If distillation meets manual optimization (the returned loss is not used)."""
    if distill is not None and not automatic_optimization:
        raise ValueError(
            "`distill` adds to the loss that training_step returns, which manual optimization does not use; "
            "add the distillation term yourself (lightning_prune.distillation.distillation_loss) or leave out `distill`."
        )



def teacher_from_state(module: nn.Module, state: dict[str, torch.Tensor], reshaped: bool) -> nn.Module:
    """Rebuild the frozen teacher from its saved state (a resumed fit).

    Args:
        module: The student, as restored from the checkpoint.
        state: The teacher's ``state_dict``.
        reshaped: Whether neurons were removed from the student since (then the dense architecture
            is rebuilt from the module's saved hyperparameters, as ``load_from_checkpoint`` does).

    Raises:
        ValueError: If the dense architecture is needed and the module saved no hyperparameters.
    """
    base = module
    if reshaped:
        base = dense_build(module)
        if base is None:
            raise ValueError(
                "Resuming a distilled fit after neurons were removed needs the dense teacher's architecture: call "
                "self.save_hyperparameters() in the module's __init__ so that it can be rebuilt."
            )
    teacher = frozen_teacher(base)
    teacher.load_state_dict(state)
    return teacher
