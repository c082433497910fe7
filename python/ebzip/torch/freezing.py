"""Progressive layer freezing: split a model into stages, freeze a leading run of them.

A *stage* is a module whose output feeds the next one (a torchvision-style
ResNet's stem, ``layer1`` .. ``layer4`` and head; the children of an
``nn.Sequential``; or groups of them at user-given split points). Freezing
the first ``k`` stages stops their updates: parameters stop requiring
gradients and the stages go to eval mode, so batch-norm statistics stop
moving too and the prefix becomes a fixed function whose outputs can be
cached (see :mod:`ebzip.torch.freeze_cache`).

When to freeze is decided by a schedule (``{epoch: n_frozen}``) or by a
convergence signal in the manner of AutoFreeze / Egeria: a stage whose
gradient norm has stopped changing has converged.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import torch
from torch import nn

_RESNET_STEM = ("conv1", "bn1", "relu", "maxpool")
_RESNET_LAYERS = ("layer1", "layer2", "layer3", "layer4")


def split_stages(model, split_points: Sequence[int] | None = None) -> list[nn.Module]:
    """The stages of ``model`` as a list of modules, to be run one after the other.

    * a list/tuple of modules: taken as the stages;
    * a torchvision-style ResNet (``conv1 bn1 relu maxpool layer1..4 avgpool fc``):
      ``[stem, layer1, layer2, layer3, layer4, head]`` with head = avgpool, flatten, fc;
    * an ``nn.Sequential``: its children, or, with ``split_points`` (increasing child
      indices), the runs of children between those points.
    """
    if isinstance(model, (list, tuple)):
        if not model or not all(isinstance(m, nn.Module) for m in model):
            raise TypeError("a list of stages must be a non-empty list of nn.Module")
        stages = list(model)
    elif all(hasattr(model, a) for a in ("conv1", "bn1", "layer1", "avgpool", "fc")) and split_points is None:
        stem = nn.Sequential(*[getattr(model, a) for a in _RESNET_STEM if hasattr(model, a)])
        layers = [getattr(model, a) for a in _RESNET_LAYERS if hasattr(model, a)]
        stages = [stem, *layers, nn.Sequential(model.avgpool, nn.Flatten(1), model.fc)]
    elif isinstance(model, nn.Sequential):
        children = list(model.children())
        if split_points is None:
            stages = children
        else:
            points = [int(p) for p in split_points]
            if not points or points != sorted(set(points)) or points[0] <= 0 or points[-1] >= len(children):
                raise ValueError(f"split_points must be increasing child indices in [1, {len(children) - 1}]; "
                                 f"got {list(split_points)!r}")
            edges = [0, *points, len(children)]
            stages = [nn.Sequential(*children[a:b]) for a, b in zip(edges[:-1], edges[1:])]
    else:
        raise TypeError(f"cannot split a {type(model).__name__} into stages: pass an nn.Sequential, a "
                        "torchvision-style ResNet, or the list of stage modules")
    if len(stages) < 2:
        raise ValueError("a model needs at least two stages to freeze a prefix of it")
    return stages


def freeze_stages(stages: Sequence[nn.Module], n_frozen: int) -> None:
    """Freeze the first ``n_frozen`` stages (no gradients, eval mode); the rest are left as they are.

    Call it again after ``model.train()``, which would put the frozen stages back in train mode.
    """
    if not isinstance(n_frozen, int) or isinstance(n_frozen, bool) or not 0 <= n_frozen < len(stages):
        raise ValueError(f"n_frozen must be an integer in [0, {len(stages) - 1}] (the last stage stays trainable); "
                         f"got {n_frozen!r}")
    for stage in stages[:n_frozen]:
        stage.eval()
        for p in stage.parameters():
            p.requires_grad_(False)
            p.grad = None


class GradNormConvergence:
    """A stage has converged when its gradient norm changes by less than ``threshold`` (relative)
    from one epoch to the next, ``patience`` epochs in a row (AutoFreeze's signal). An epoch in
    which a stage with trainable parameters had no gradient at all is recorded as NaN and never
    counts as converged."""

    def __init__(self, threshold: float = 0.1, patience: int = 1):
        if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold > 0):
            raise ValueError(f"threshold must be a positive number; got {threshold!r}")
        if not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be a positive integer; got {patience!r}")
        self.threshold = float(threshold)
        self.patience = patience
        self.history: list[list[float]] = []  # per epoch, the mean gradient norm of each stage (NaN: none seen)

    def converged(self, stage: int) -> bool:
        norms = [h[stage] for h in self.history[-(self.patience + 1):]]
        if len(norms) < self.patience + 1 or not all(map(math.isfinite, norms)):
            return False
        return all(abs(b - a) <= self.threshold * max(a, 1e-30) for a, b in zip(norms[:-1], norms[1:]))


class ProgressiveFreezer:
    """Freezes a model's leading stages as training goes, by schedule or by convergence.

    ``schedule``: ``{epoch: n_frozen}``; from that epoch on, the first ``n_frozen`` stages are
    frozen. ``convergence``: a :class:`GradNormConvergence`; call :meth:`after_backward` after
    each ``loss.backward()`` so it can measure each stage's gradient norm. Call
    :meth:`start_epoch` at the start of every epoch: it returns how many stages are frozen
    for that epoch (freezing more when the schedule or the signal says so; never fewer).
    """

    def __init__(self, stages: Sequence[nn.Module], *, schedule: Mapping[int, int] | None = None,
                 convergence: GradNormConvergence | None = None, max_frozen: int | None = None):
        if (schedule is None) == (convergence is None):
            raise ValueError("give exactly one of schedule= ({epoch: n_frozen}) or convergence=")
        self.stages = list(stages)
        self.max_frozen = len(self.stages) - 1 if max_frozen is None else int(max_frozen)
        if not 0 <= self.max_frozen < len(self.stages):
            raise ValueError(f"max_frozen must be in [0, {len(self.stages) - 1}]; got {max_frozen!r}")
        if schedule is not None:
            for epoch, n in schedule.items():
                if not (isinstance(epoch, int) and epoch >= 0 and isinstance(n, int) and 0 <= n <= self.max_frozen):
                    raise ValueError(f"schedule entries must be epoch >= 0 -> n_frozen in [0, {self.max_frozen}]; "
                                     f"got {epoch!r}: {n!r}")
        self.schedule = dict(schedule or {})
        self.convergence = convergence
        self.frozen = 0
        self._norm_sums = [0.0] * len(self.stages)
        self._had_grad = [False] * len(self.stages)
        self._steps = 0

    @torch.no_grad()
    def after_backward(self) -> None:
        if self.convergence is None:
            return
        for i, stage in enumerate(self.stages[self.frozen:], start=self.frozen):
            grads = [p.grad for p in stage.parameters() if p.grad is not None]
            self._had_grad[i] |= bool(grads)
            self._norm_sums[i] += math.sqrt(sum(float(g.pow(2).sum()) for g in grads))
        self._steps += 1

    def start_epoch(self, epoch: int) -> int:
        target = self.frozen
        if self.schedule:
            due = [n for e, n in self.schedule.items() if e <= epoch]
            target = max([target, *due])
        elif self._steps:
            # a trainable stage that showed no gradient was not measured (after_backward called after
            # zero_grad?): NaN, so it does not pass for converged with a norm of 0 every epoch
            missing = [i for i, stage in enumerate(self.stages) if i >= self.frozen and not self._had_grad[i]
                       and any(p.requires_grad for p in stage.parameters())]
            if missing:
                warnings.warn(f"stages {missing} had no gradient in any after_backward() call last epoch; call it "
                              "after loss.backward() and before the gradients are zeroed. They are not counted "
                              "as converged.", RuntimeWarning, stacklevel=2)
            self.convergence.history.append([math.nan if i in missing else s / self._steps
                                             for i, s in enumerate(self._norm_sums)])
            self._norm_sums = [0.0] * len(self.stages)
            self._had_grad = [False] * len(self.stages)
            self._steps = 0
            while target < self.max_frozen and self.convergence.converged(target):
                target += 1
        self.frozen = min(target, self.max_frozen)
        freeze_stages(self.stages, self.frozen)
        return self.frozen


@torch.no_grad()
def stage_forward_flops(stages: Sequence[nn.Module], example: torch.Tensor) -> list[int]:
    """Forward FLOPs per sample of each stage on ``example`` (a batch), by torch's flop counter.

    For accounting: a training step costs about 3x the forward FLOPs of the trainable stages
    (forward + backward), a frozen stage run without grad 1x, a cached one nothing after the
    cache is built. Stages are put in eval mode; call ``.train()`` afterwards as needed.
    """
    from torch.utils.flop_counter import FlopCounterMode

    flops, h = [], example
    for stage in stages:
        stage.eval()
        with FlopCounterMode(display=False) as counter:
            h = stage(h)
        flops.append(counter.get_total_flops() // example.shape[0])
    return flops

