"""The ``lvflops`` command line."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from lvflops import QWEN2_5_0_5B, forward_flops, train_step_flops
from lvflops.cli import main


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def expected_qwen_matmul(seq: int, kv_heads: int) -> int:
    """Sum of m*p*(2n-1) over every product of a Qwen2.5-0.5B forward, written out by hand."""
    d, layers, heads, hd, inter, vocab = 896, 24, 14, 64, 4864, 151936
    per_layer = (
        seq * (heads * hd) * (2 * d - 1)  # q_proj (seq x 896)(896 x 896)
        + 2 * seq * (kv_heads * hd) * (2 * d - 1)  # k_proj, v_proj (seq x 896)(896 x kv*64)
        + heads * seq * seq * (2 * hd - 1)  # scores (seq x 64)(64 x seq) per head
        + heads * seq * hd * (2 * seq - 1)  # values (seq x seq)(seq x 64) per head
        + seq * d * (2 * heads * hd - 1)  # o_proj (seq x 896)(896 x 896)
        + 2 * seq * inter * (2 * d - 1)  # gate, up (seq x 896)(896 x 4864)
        + seq * d * (2 * inter - 1)  # down (seq x 4864)(4864 x 896)
    )
    return layers * per_layer + seq * vocab * (2 * d - 1)  # lm_head at every position


@pytest.mark.parametrize(("flag", "kv_heads"), [("--gqa-as-mha", 14), ("--no-gqa-as-mha", 2)])
def test_must_show_forward_matmul(flag, kv_heads):
    result = run(
        "count", "--model", "qwen2.5-0.5b", "--seq-len", "512", "--batch", "1", flag, "--json"
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["forward"]["matmul"] == expected_qwen_matmul(512, kv_heads)
    assert out["forward"]["matmul"] == {14: 561_836_261_376, 2: 528_032_268_288}[kv_heads]
    assert out["forward"]["total"] == sum(out["forward"]["by_component"].values())


def test_json_default_is_gqa_as_mha_and_training_totals():
    result = run("count", "--seq-len", "512", "--batch", "4", "--steps", "1000", "--lora-rank", "4",
                 "--lm-head-bias", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    kw = {"lora_rank": 4, "lm_head_bias": True}
    assert out["forward"] == forward_flops(QWEN2_5_0_5B, 512, 4, **kw).as_dict()
    step = train_step_flops(QWEN2_5_0_5B, 512, 4, **kw).total
    assert out["train_step"] == step == 3 * out["forward"]["total"]
    assert out["train_total"] == 1000 * step
    assert out["budget_share"] == pytest.approx(1000 * step / 1e17)
    assert out["max_steps"] == 10**17 // step
    assert out["settings"]["gqa_as_mha"] is True
    assert out["settings"]["lora_targets"] == ["q_proj", "v_proj"]
    assert out["n_params"] == 494_032_768


def test_table_output():
    result = run("count", "--seq-len", "128", "--lora-rank", "4", "--steps", "10")
    assert result.exit_code == 0, result.output
    for word in (
        "lm_head",
        "mlp_gate",
        "swiglu",
        "rope",
        "softmax",
        "lora",
        "train total",
        "budget",
    ):
        assert word in result.output


def test_model_from_config_path(tmp_path):
    cfg = {**QWEN2_5_0_5B.to_hf_config(), "model_type": "qwen2"}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    by_name = json.loads(run("count", "--json").output)
    for model in (str(tmp_path / "config.json"), str(tmp_path)):
        result = run("count", "--model", model, "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["forward"] == by_name["forward"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "gpt-17"], "qwen2.5-0.5b"),
        (["--seq-len", "0"], "--seq-len"),
        (["--batch", "-2"], "--batch"),
        (["--lora-rank", "0"], "--lora-rank"),
        (["--budget", "lots"], "--budget"),
        (["--lora-target", "wq"], "--lora-target"),
    ],
)
def test_bad_input_is_a_click_error(args, message):
    result = run("count", *args)
    assert result.exit_code == 2
    assert message in result.output


def test_bad_config_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"hidden_size": 8}))
    result = run("count", "--model", str(path))
    assert result.exit_code == 2 and "cannot read a model shape" in result.output


def test_generate_command():
    result = run("generate", "--prompt-len", "100", "--new-tokens", "10", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    no_cache = json.loads(
        run(
            "generate", "--prompt-len", "100", "--new-tokens", "10", "--no-kv-cache", "--json"
        ).output
    )
    assert no_cache["generate"]["total"] > out["generate"]["total"]


def test_console_script_help():
    proc = subprocess.run(
        [sys.executable, "-m", "lvflops.cli", "--help"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0 and "count" in proc.stdout


def test_import_needs_neither_torch_nor_numpy():
    code = "import lvflops, sys; assert 'torch' not in sys.modules and 'numpy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    code = (
        "import lvflops.cli, sys; assert 'torch' not in sys.modules and 'numpy' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
