"""A training step reads nothing back from the device: on a GPU every such read (`float(loss)`,
`int(mask.sum())`, a boolean mask's `nonzero`, `tolist`) stalls the host until the queue drains.

There is no GPU here, so the test tracks which tensors *would* live on the device: the batches
`lvmodel.train.to_device` moves, the model's parameters and everything computed from them (a
dispatch mode marks every op's outputs when any input is marked). Tensors that stay on the host
by design (the host's copy of a batch, AdamW's step counters outside the fused kernel) are not
marked. A read of a marked tensor's value is a device-to-host read: there must be none during
the steps, and exactly one at each logging point (`_Fit.log`, which reads every pending step's
values at once).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

import lvmodel.train as train_mod
from lvmodel.config import TrainConfig
from lvmodel.lora import LoraSettings
from lvmodel.tiny_tokenizer import build_tiny_tokenizer
from lvmodel.train import fit
from tests.lvmodel._toy import toy_model

LORA = LoraSettings(rank=2, lm_head_bias=True)
aten = torch.ops.aten
# Ops whose result the host must wait for: a scalar's value, or an output whose size depends on
# the data.
READS = {
    aten._local_scalar_dense.default,
    aten.nonzero.default,
    aten.masked_select.default,
    aten.is_nonzero.default,
    aten.equal.default,
    aten._unique2.default,
}


class DeviceReads(TorchDispatchMode):
    """Marks tensors derived from device tensors; counts reads of their values."""

    def __init__(self) -> None:
        super().__init__()
        self.on_device: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.reads: list[str] = []
        self.in_log = False

    def mark(self, tensors: Any) -> None:
        for t in tree_flatten(tensors)[0]:
            if isinstance(t, torch.Tensor):
                self.on_device[t] = True

    def is_marked(self, t: Any) -> bool:
        return isinstance(t, torch.Tensor) and t in self.on_device

    def read(self, what: str) -> None:
        self.reads.append(f"{'log' if self.in_log else 'step'}:{what}")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = tree_flatten((args, kwargs))[0]
        if any(self.is_marked(t) for t in inputs):
            by_mask = func in (aten.index.Tensor, aten.index_put_.default) and any(
                isinstance(t, torch.Tensor) and t.dtype == torch.bool for t in inputs[1:]
            )  # a boolean mask's indices are its nonzero entries: the device counts, the host waits
            if func in READS or by_mask:
                self.read(str(func))
            self.mark(out)
        return out


def test_no_device_reads_between_logging_points(toy_data, monkeypatch):
    train, val, codec = toy_data
    model = toy_model(LORA)
    mode = DeviceReads()
    mode.mark(list(model.parameters()))

    moved = train_mod.to_device

    def to_device(batch, device):
        out = {k: v.clone() for k, v in moved(batch, device).items()}  # not the host's tensor
        mode.mark(list(out.values()))
        return out

    tolist = torch.Tensor.tolist

    def counted_tolist(self):
        if mode.is_marked(self):
            mode.read("tolist")
        return tolist(self)

    log = train_mod._Fit.log

    def logging(self, bar):
        mode.in_log = True
        try:
            log(self, bar)
        finally:
            mode.in_log = False

    monkeypatch.setattr(train_mod, "to_device", to_device)
    monkeypatch.setattr(torch.Tensor, "tolist", counted_tolist)
    monkeypatch.setattr(train_mod._Fit, "log", logging)
    seen: list[tuple[int, dict]] = []
    forwards: list[dict[str, Any]] = []

    def spy(module, args, kwargs):
        forwards.append(kwargs)

    model.get_base_model().model.register_forward_pre_hook(spy, with_kwargs=True)
    config = TrainConfig(
        steps=8,
        lr=5e-3,
        batch_size=2,
        context_length=64,
        eval_every=0,
        forecast_series=0,
        evaluate_at_end=False,
        log_every=4,
        log_seconds=0,
        seed=3,
    )
    with mode:
        result = fit(model, build_tiny_tokenizer(), codec, train, val, config, LORA,
                     on_metrics=seen.extend, progress=False)  # fmt: skip
    assert result.steps == 8
    assert [s for s, _ in seen] == list(range(1, 9))  # every step recorded
    assert all(isinstance(m["train_loss"], float) and m["grad_norm"] > 0 for _, m in seen)
    assert mode.reads == ["log:tolist", "log:tolist"]  # one read per logging point, none else
    assert forwards and all(kw["use_cache"] is False for kw in forwards)  # no KV cache built
    # Windows are right-padded: no attention mask, so no check of it for padding.
    assert all(kw["attention_mask"] is None for kw in forwards)


def test_the_detector_sees_the_reads_the_old_step_made():
    """The reads of the loop before this change: `float(loss)` and `int(mask.sum())`."""
    mode = DeviceReads()
    x = torch.ones(3)
    mode.mark(x)
    with mode:
        _ = float((x * 2).sum())
        _ = int((x > 0).sum())
        _ = x[x > 0]  # boolean indexing: nonzero
        _ = float(torch.ones(2).sum())  # a host tensor: not a device read
    assert len(mode.reads) == 3, mode.reads
