"""Mixed precision of the LoRA wrap: a bf16 base, float32 trainables and float32 optimizer state."""

from __future__ import annotations

import torch

from lvmodel.lora import (
    LoraSettings,
    apply_lora,
    head_bias,
    load_adapter,
    save_adapter,
    trainable_state,
)
from lvmodel.tiny import random_tiny

SETTINGS = LoraSettings(rank=2, lm_head_bias=True)


def _bf16_lora(seed: int = 0):
    model, tok = random_tiny(seed=seed)
    model = model.to(torch.bfloat16)
    torch.manual_seed(seed)
    return apply_lora(model, SETTINGS), tok


def _batch(tok, n: int = 2) -> dict[str, torch.Tensor]:
    ids = torch.tensor([tok("0.51,1.02;0.55,0.98;0.61,0.93;")["input_ids"]] * n)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def test_every_trainable_tensor_is_float32_in_a_bf16_base():
    model, _ = _bf16_lora()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable) and any("lora_B" in n for n in trainable)
    assert any(n.endswith("lv_bias") for n in trainable)
    assert {n: p.dtype for n, p in trainable.items()} == dict.fromkeys(trainable, torch.float32)
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    assert frozen == {torch.bfloat16}  # the base itself stays bf16


def test_one_adamw_step_at_1e_4_moves_the_bias_and_keeps_fp32_state():
    model, tok = _bf16_lora()
    bias = head_bias(model)
    assert bias is not None
    before = bias.detach().clone()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    model.train()
    out = model(**_batch(tok))
    assert out.logits.dtype == torch.float32  # bf16 head output, float32 once the bias is added
    out.loss.backward()
    assert bias.grad is not None and bias.grad.dtype == torch.float32
    opt.step()
    change = (bias.detach() - before).abs()
    # Adam's first step moves every entry with a gradient by about lr; a bf16 bias near 0 could
    # hold that, but not near 1: check the update survives where bf16 would round it away.
    assert float(change.max()) > 0.5e-4
    assert int((change > 0).sum()) > bias.numel() // 2
    with torch.no_grad():
        bias.fill_(1.0)
    opt.step()
    moved = bias.detach() - 1.0
    assert float(moved.abs().max()) > 0.5e-4  # 1 + 1e-4 rounds to 1 in bf16, not in fp32
    for p in params:
        state = opt.state[p]
        assert state["exp_avg"].dtype == torch.float32
        assert state["exp_avg_sq"].dtype == torch.float32


def test_the_bias_is_added_to_the_logits():
    model, tok = _bf16_lora()
    batch = _batch(tok, n=1)
    model.eval()
    with torch.no_grad():
        plain = model(input_ids=batch["input_ids"]).logits.float()
        head_bias(model).fill_(0.5)  # type: ignore[union-attr]
        shifted = model(input_ids=batch["input_ids"]).logits.float()
    assert torch.allclose(shifted - plain, torch.full_like(plain, 0.5), atol=1e-6)  # fp32 add


def test_a_small_bias_moves_large_bf16_logits_by_its_own_size():
    """In a bf16 base a bias of 0.003 must move a logit of magnitude 8-32 by 0.003, not by 0 (a
    bf16 step there is 0.06-0.125: adding the bias in bf16 rounds it away)."""
    model, tok = _bf16_lora()
    with torch.no_grad():  # large logits, as a trained LM's: scale the (tied) head weight
        model.get_output_embeddings().weight.mul_(64.0)
    ids = _batch(tok, n=2)["input_ids"]
    model.eval()
    token = 17  # the digit "2"
    with torch.no_grad():
        plain = model(input_ids=ids).logits[..., token]
        head_bias(model)[token] = 0.003  # type: ignore[index]
        moved = model(input_ids=ids).logits[..., token]
    large = plain.abs() > 8
    assert int(large.sum()) >= 10  # enough positions where bf16 would have rounded it away
    shift = (moved - plain)[large]
    assert torch.allclose(shift, torch.full_like(shift, 0.003), rtol=0.1, atol=0)


def test_adapter_round_trip_keeps_float32_bias(tmp_path):
    model, _ = _bf16_lora()
    with torch.no_grad():
        head_bias(model).uniform_(-1e-3, 1e-3)  # type: ignore[union-attr]
    saved = trainable_state(model)
    save_adapter(model, tmp_path / "adapter", SETTINGS)
    base, _ = random_tiny(seed=0)
    loaded = load_adapter(base.to(torch.bfloat16), tmp_path / "adapter")
    bias = head_bias(loaded)
    assert bias is not None and bias.dtype == torch.float32
    name = next(n for n in saved if n.endswith("lv_bias"))
    assert torch.equal(bias.detach(), saved[name])  # fp32 values exactly, not rounded to bf16


def test_the_bias_is_added_once_however_often_it_is_asked_for():
    model, tok = _bf16_lora()
    from lvmodel.lora import _add_lm_head_bias

    first = head_bias(model)
    assert _add_lm_head_bias(model) is first
    batch = _batch(tok, n=1)
    with torch.no_grad():
        first.fill_(1.0)  # type: ignore[union-attr]
        a = model(input_ids=batch["input_ids"]).logits.float()
        first.fill_(0.0)  # type: ignore[union-attr]
        b = model(input_ids=batch["input_ids"]).logits.float()
    assert torch.allclose(a - b, torch.ones_like(a), atol=1e-6)  # one hook, not two


def test_flops_kwargs_describe_the_wrap_that_apply_lora_makes():
    from lvmodel.run_plan import lora_flops_kwargs

    settings = LoraSettings(rank=3, lm_head_bias=False)
    assert settings.flops_kwargs() == {
        "lora_rank": 3,
        "lora_targets": ("q_proj", "v_proj"),  # the coursework's wrap, the default
        "lm_head_bias": False,
    }
    assert SETTINGS.flops_kwargs()["lm_head_bias"] is True
    assert lora_flops_kwargs(None) == {}  # a bare base: no LoRA terms
    assert lora_flops_kwargs(settings) == settings.flops_kwargs()
    model, _ = random_tiny(seed=0)
    wrapped = apply_lora(model, settings)
    # parameter names end in "<module>.lora_A.default.weight"
    lora_modules = {n.split(".")[-4] for n, _ in wrapped.named_parameters() if "lora_A" in n}
    assert lora_modules == set(settings.flops_kwargs()["lora_targets"])
