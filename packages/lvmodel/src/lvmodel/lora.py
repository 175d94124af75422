"""LoRA through PEFT, plus the coursework's optional trainable lm_head bias.

The coursework's reference code wraps q_proj and v_proj with LoRA (alpha = rank) and makes a bias on
the LM head (one value per vocabulary entry) trainable. PEFT has no notion of a bias added to a layer
that has none, so the bias is a plain `nn.Parameter` (`lm_head.lv_bias`) added to the head's output
by a forward hook and saved beside the adapter in its own safetensors file; the LoRA weights stay in
PEFT's format (`PeftModel.from_pretrained` loads them).

Every trainable tensor is float32 whatever the base's dtype (mixed precision: a bf16 base, fp32
trainables and fp32 AdamW state). PEFT upcasts LoRA A/B itself (`autocast_adapter_dtype=True`);
the head bias is created in float32 and added to the logits *in float32* (the hook upcasts the
head's output first): the logits the grammar and sampling see carry the bias at float32
resolution. Adding it after casting it to bf16 would round its effect away: at logits of 8-32 a
bf16 step is 0.06-0.125, so a bias of 0.003 moved a logit by exactly 0 (measured; the test in
tests/lvmodel/test_lora.py). Generation asks for the last position's logits only, so the float32
logits are one row per sequence; training and validation never build the whole logits at all
(`lvmodel.loss`). The bias cannot simply be the head's own `bias`: `nn.Linear` would then mix a
bf16 weight with a float32 bias, which fails outside autocast (a bf16 base on the CPU).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from torch import nn

from lvflops import DEFAULT_LORA_TARGETS

BIAS_FILE = "lm_head_bias.safetensors"
BIAS_PARAM = "lv_bias"  # name of the bias parameter on the LM head module
SETTINGS_FILE = "lv_lora.json"


@dataclass(frozen=True)
class LoraSettings:
    """What to adapt and how.

    Attributes:
        rank: LoRA rank r.
        alpha: LoRA alpha; None means alpha = rank (scaling 1, as in the coursework's reference code).
        dropout: dropout on the LoRA input.
        targets: module names to wrap (PEFT `target_modules`; default lvflops'
            `DEFAULT_LORA_TARGETS`, q_proj and v_proj, the coursework's wrap).
        lm_head_bias: add a trainable bias to the LM head (counted in FLOPs as vocab adds per position).
    """

    rank: int = 4
    alpha: int | None = None
    dropout: float = 0.0
    targets: tuple[str, ...] = DEFAULT_LORA_TARGETS
    lm_head_bias: bool = True

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        if not self.targets:
            raise ValueError("LoRA needs at least one target module")
        object.__setattr__(self, "targets", tuple(self.targets))

    @property
    def lora_alpha(self) -> int:
        return self.rank if self.alpha is None else self.alpha

    def flops_kwargs(self) -> dict[str, Any]:
        """The keywords lvflops' cost functions take for this wrap (`lora_rank`, `lora_targets`,
        `lm_head_bias`): the one place they are built from the settings."""
        return {
            "lora_rank": self.rank,
            "lora_targets": self.targets,
            "lm_head_bias": self.lm_head_bias,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "targets": list(self.targets)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoraSettings:
        return cls(**{**data, "targets": tuple(data["targets"])})


def lm_head(model: nn.Module) -> nn.Linear:
    """The output projection of a (possibly PEFT-wrapped) causal LM."""
    head = model.get_output_embeddings()  # type: ignore[operator]
    if not isinstance(head, nn.Linear):
        raise TypeError(f"expected a Linear LM head, got {type(head).__name__}")
    return head


def _add_bias_to_logits(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
    bias: torch.Tensor = getattr(module, BIAS_PARAM)
    return output.float() + bias  # float32 logits: the bias acts at float32 resolution


def head_bias(model: nn.Module) -> nn.Parameter | None:
    """The trainable lm_head bias added by `apply_lora` / `load_adapter`, or None."""
    return getattr(lm_head(model), BIAS_PARAM, None)


def _add_lm_head_bias(model: nn.Module) -> nn.Parameter:
    """A float32 bias on the head's output (added once, however often this is called)."""
    head = lm_head(model)
    if head.bias is not None:
        raise ValueError("the model's LM head already has a bias; lm_head_bias=True adds another")
    bias = head_bias(model)
    if bias is None:
        bias = nn.Parameter(
            torch.zeros(head.out_features, dtype=torch.float32, device=head.weight.device)
        )
        head.register_parameter(BIAS_PARAM, bias)
        head.register_forward_hook(_add_bias_to_logits)
    bias.requires_grad_(True)
    return bias


def apply_lora(model: nn.Module, settings: LoraSettings | None = None) -> PeftModel:
    """Freeze `model`, wrap `settings.targets` with LoRA and, if asked, add the lm_head bias."""
    settings = settings or LoraSettings()
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.targets),
        bias="none",
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config, autocast_adapter_dtype=True)  # fp32 LoRA A/B
    if settings.lm_head_bias:
        _add_lm_head_bias(peft_model)
    return peft_model


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied weights are counted once."""
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every trainable tensor by name (LoRA weights and the lm_head bias): what a checkpoint keeps."""
    return {
        n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad
    }


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy tensors saved by `trainable_state` back in place; names must match exactly."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = set(params) - set(state), set(state) - set(params)
    if missing or unexpected:
        raise ValueError(
            f"trainable tensors do not match the model: missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]}"
        )
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(state[name].to(p.device, p.dtype))


def save_adapter(model: PeftModel, directory: str | Path, settings: LoraSettings) -> Path:
    """Save the LoRA adapter (PEFT format, safetensors), the lm_head bias and the settings."""
    directory = Path(directory)
    model.save_pretrained(str(directory), safe_serialization=True)
    if settings.lm_head_bias:
        bias = head_bias(model)
        assert bias is not None
        save_file({"bias": bias.detach().cpu().contiguous()}, str(directory / BIAS_FILE))
    (directory / SETTINGS_FILE).write_text(json.dumps(settings.to_dict(), indent=2))
    return directory


def load_adapter(
    base_model: nn.Module, directory: str | Path, trainable: bool = False
) -> PeftModel:
    """Load an adapter saved by `save_adapter` onto `base_model` (safetensors only, no pickle)."""
    directory = Path(directory)
    settings_path = directory / SETTINGS_FILE
    if not settings_path.is_file():
        raise FileNotFoundError(f"{directory} is not an lv-forecast adapter: no {SETTINGS_FILE}")
    settings = LoraSettings.from_dict(json.loads(settings_path.read_text()))
    model = PeftModel.from_pretrained(
        base_model, str(directory), is_trainable=trainable, autocast_adapter_dtype=True
    )
    if settings.lm_head_bias:
        bias = _add_lm_head_bias(model)
        with torch.no_grad():
            bias.copy_(load_file(str(directory / BIAS_FILE))["bias"].to(bias.device, torch.float32))
        bias.requires_grad_(trainable)
    return model


def adapter_settings(directory: str | Path) -> LoraSettings:
    """The LoraSettings an adapter directory was saved with."""
    return LoraSettings.from_dict(json.loads((Path(directory) / SETTINGS_FILE).read_text()))
