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


# Cross-entropy of one of 512 positions over 151936 logits: max V-1 compares, subtract V, exp 10V,
# sum V-1 adds, log 10, subtract 1, negate 1; plus 1 per position for the mean (P-1 adds, 1 divide).
QWEN_LOSS_512 = 512 * ((151936 - 1) + 151936 + 10 * 151936 + (151936 - 1) + 10 + 1 + 1 + 1)


def test_must_show_train_step_is_three_forward_plus_loss():
    result = run("count", "--seq-len", "512", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert QWEN_LOSS_512 == 1_011_291_648
    assert out["forward"]["by_component"]["loss"] == QWEN_LOSS_512
    # the forward alone is the worked total of the README (564,304,304,128)
    assert out["forward"]["total"] == 564_304_304_128 + QWEN_LOSS_512
    assert out["train_step"] == 3 * (564_304_304_128 + QWEN_LOSS_512) == 1_695_946_787_328


def test_json_default_is_gqa_as_mha_and_training_totals():
    result = run("count", "--seq-len", "512", "--batch", "4", "--steps", "1000", "--lora-rank", "4",
                 "--lm-head-bias", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    kw = {"lora_rank": 4, "lm_head_bias": True}
    plain = forward_flops(QWEN2_5_0_5B, 512, 4, **kw)
    assert out["forward"]["by_component"]["loss"] == 4 * QWEN_LOSS_512
    assert out["forward"]["total"] == plain.total + 4 * QWEN_LOSS_512
    assert out["forward"]["matmul"] == plain.matmul
    step = train_step_flops(QWEN2_5_0_5B, 512, 4, **kw).total
    assert out["train_step"] == step == 3 * out["forward"]["total"]
    # the README's forward with LoRA r=4 and the lm_head bias (564,756,338,688 per sequence)
    assert step == 3 * 4 * (564_756_338_688 + QWEN_LOSS_512) == 6_789_211_564_032
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


def generate_json(*args: str) -> dict:
    result = run("generate", "--prompt-len", "100", "--new-tokens", "10", "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_generate_static_cache_options():
    dynamic = generate_json()
    static = generate_json("--static-cache")
    assert dynamic["cache_len"] is None and static["cache_len"] == 100 + 10 - 1
    assert static["generate"] == generate_json("--cache-len", "109")["generate"]
    # the prefill attends 9 more keys and step i (= 1..9) 9 - i more, at 14 heads, 24 layers, all
    # at (2*64 - 1) scores + (2*64) values per extra key in matrix products
    extra_keys = 100 * 9 + sum(9 - i for i in range(1, 10))
    assert static["generate"]["matmul"] - dynamic["generate"]["matmul"] == (
        24 * 14 * extra_keys * (127 + 128)
    )
    assert generate_json("--cache-len", "200")["generate"]["total"] > static["generate"]["total"]


@pytest.mark.parametrize(
    "args",
    [
        ["--cache-len", "108"],  # 109 positions must fit
        ["--static-cache", "--cache-len", "200"],
        ["--static-cache", "--no-kv-cache"],
    ],
)
def test_generate_bad_static_cache_options(args):
    result = run("generate", "--prompt-len", "100", "--new-tokens", "10", *args)
    assert result.exit_code == 2, result.output


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
