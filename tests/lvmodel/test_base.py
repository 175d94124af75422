"""load_base: the four kinds of spec, tokenizer/model fix-ups, fast failures, hub revisions and
partly cached snapshots (a fake HF cache), pinning bases by reference; opt-in real GGUF."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lvflops import ModelShape
from lvmodel.base import (
    DEFAULT_BASE,
    HUB_PROBE_TIMEOUT_S,
    BaseModelError,
    base_shape,
    check_pinned,
    describe_base,
    load_base,
    load_pinned,
    pin_base,
)
from lvmodel.synthetic import format_series
from lvmodel.tiny import random_tiny as make_random_tiny
from lvmodel.tiny_tokenizer import EOS_ID, PAD_ID, build_tiny_tokenizer
from tests.hfcache import add_snapshot, commit_hash, use_hf_cache


def _check_ready(model, tok) -> None:
    assert tok.padding_side == "left"
    assert tok.pad_token_id is not None and tok.eos_token_id is not None
    assert model.config.pad_token_id == tok.pad_token_id
    assert model.generation_config.pad_token_id == tok.pad_token_id
    assert model.generation_config.eos_token_id is not None
    assert not model.training


def test_load_tiny(tiny_base) -> None:
    model, tok = tiny_base
    _check_ready(model, tok)
    assert (tok.pad_token_id, tok.eos_token_id) == (PAD_ID, EOS_ID)
    assert model.dtype == torch.float32 and model.device.type == "cpu"
    info = describe_base(model)
    assert info["num_key_value_heads"] < info["num_attention_heads"]
    assert info["tie_word_embeddings"] and info["n_params"] > 100_000


def test_load_local_directory(random_tiny, tmp_path: Path) -> None:
    model, tok = random_tiny
    model.save_pretrained(tmp_path, safe_serialization=True)
    tok.save_pretrained(tmp_path)
    loaded, ltok = load_base(str(tmp_path), device="cpu")
    _check_ready(loaded, ltok)
    ids = ltok(["1.00,2.00;", "0.5"], return_tensors="pt", padding=True)
    assert ids["attention_mask"][1, 0] == 0  # left padding
    with torch.no_grad():
        a = model(**ids).logits
        b = loaded(**ids).logits
    torch.testing.assert_close(a, b)


def test_batched_generate_is_left_padded_and_quiet(random_tiny, recwarn) -> None:
    model, tok = random_tiny
    enc = tok(["0.10,0.20;0.30,0.40;", "1.00,2.00;"], return_tensors="pt", padding=True)
    out = model.generate(**enc, max_new_tokens=4, do_sample=False)
    assert out.shape == (2, enc["input_ids"].shape[1] + 4)
    assert not [w for w in recwarn.list if "pad_token_id" in str(w.message)]


@pytest.mark.parametrize(
    "spec", ["missing/model.gguf", "./no-such-model-dir", "/no/such/dir", "a/b/no-such-model"]
)
def test_missing_path_names_it(spec: str) -> None:
    with pytest.raises(BaseModelError, match=Path(spec).name) as err:
        load_base(spec)
    assert "gguf" in str(err.value) and "tiny" in str(err.value)


@pytest.mark.parametrize("offline", [True, False])
def test_uncached_hub_id_fails_fast(offline: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # A made-up id: never cached; offline it fails at once, online the hub probe says no.
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    spec = "lv-forecast-tests/no-such-model-xyz"
    probes: list[float] = []
    if not offline:
        # Fail fast: one hub probe with a short timeout, no download attempt with its retries.
        import huggingface_hub

        def no_hub(repo_id: str, revision=None, timeout=None):
            probes.append(timeout)
            raise ConnectionError("the hub is unreachable here")

        monkeypatch.setattr(huggingface_hub, "model_info", no_hub)
    with pytest.raises(BaseModelError) as err:
        load_base(spec)
    assert probes == ([] if offline else [HUB_PROBE_TIMEOUT_S])
    assert HUB_PROBE_TIMEOUT_S <= 10
    message = str(err.value)
    assert spec in message and "gguf" in message and "tiny" in message


def test_default_base_is_qwen_instruct() -> None:
    assert DEFAULT_BASE == "Qwen/Qwen2.5-0.5B-Instruct"


# --- hub ids from a fake HF cache: revisions, partial snapshots --------------------------------

REPO = "lv-tests/tiny-qwen"
REV_A, REV_B = commit_hash("a"), commit_hash("b")


def _saved_tiny(folder: Path, seed: int) -> Path:
    model, tok = make_random_tiny(seed)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two saved random tiny models (seeds 0 and 1): two "revisions" of one repo."""
    root = tmp_path_factory.mktemp("tiny-revisions")
    return _saved_tiny(root / "a", 0), _saved_tiny(root / "b", 1)


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return use_hf_cache(monkeypatch, tmp_path / "hf-cache")


def _embedding(model) -> torch.Tensor:
    return model.get_input_embeddings().weight.detach()


def test_hub_id_loads_main_or_exactly_the_revision_asked(hf_cache, tiny_folders) -> None:
    a, b = tiny_folders
    add_snapshot(hf_cache, REPO, a, REV_A, main=False)
    add_snapshot(hf_cache, REPO, b, REV_B)  # refs/main -> B
    ref_a = load_base(str(a), device="cpu")[0]
    ref_b = load_base(str(b), device="cpu")[0]
    assert not torch.equal(_embedding(ref_a), _embedding(ref_b))

    main, tok = load_base(REPO, device="cpu")
    _check_ready(main, tok)
    torch.testing.assert_close(_embedding(main), _embedding(ref_b))
    pinned = load_base(REPO, device="cpu", revision=REV_A)[0]
    torch.testing.assert_close(_embedding(pinned), _embedding(ref_a))
    assert pin_base(REPO) == {"kind": "hub", "spec": REPO, "revision": REV_B}
    torch.testing.assert_close(
        _embedding(load_pinned({"kind": "hub", "spec": REPO, "revision": REV_A}, device="cpu")[0]),
        _embedding(ref_a),
    )


def test_uncached_revision_names_the_cached_ones(hf_cache, tiny_folders) -> None:
    add_snapshot(hf_cache, REPO, tiny_folders[0], REV_A)
    missing = commit_hash("never downloaded")
    with pytest.raises(BaseModelError) as err:
        load_base(REPO, device="cpu", revision=missing)
    message = str(err.value)
    assert f"{REPO!r} at revision {missing} is not in the local Hugging Face cache" in message
    assert f"cached revisions of it: {REV_A}" in message
    assert f"hf download {REPO} --revision {missing}" in message
    assert "HF_HUB_OFFLINE" in message and ".gguf" in message


def test_revision_applies_to_hub_ids_only(random_tiny_dir: Path) -> None:
    with pytest.raises(BaseModelError, match="not a hub id"):
        load_base(str(random_tiny_dir), revision=REV_A)


@pytest.mark.parametrize(
    ("case", "skip", "lacks"),
    [
        ("no-config", ("config.json",), ["config.json"]),
        ("no-weights", ("model.safetensors",), ["the weights (model.safetensors)"]),
        ("broken-link", (), ["the weights (model.safetensors)"]),
        ("listed", ("model.safetensors", "tokenizer.json"), ["the weights", "the tokenizer"]),
        ("online", ("config.json",), ["config.json"]),
    ],
)
def test_partly_cached_snapshot_is_a_clear_error(
    case: str,
    skip: tuple[str, ...],
    lacks: list[str],
    tmp_path: Path,
    tiny_folders,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An interrupted download: the snapshot folder exists, files are missing (or dangling
    links); with the hub's tree listing cached, huggingface_hub itself calls it incomplete."""
    cache = use_hf_cache(monkeypatch, tmp_path / "hf-cache", offline=case != "online")
    snapshot = add_snapshot(
        cache, REPO, tiny_folders[0], REV_A, skip=skip, listing=case == "listed"
    )
    if case == "broken-link":
        (snapshot / "model.safetensors").resolve().unlink()  # the blob never arrived
    with pytest.raises(BaseModelError) as err:
        load_base(REPO, device="cpu")
    message = str(err.value)
    assert f"{REPO!r} is only partly in the local Hugging Face cache" in message
    assert f"snapshot folder {snapshot} lacks" in message
    for what in lacks:
        assert what in message
    assert f"hf download {REPO} --revision {REV_A}" in message
    assert f"huggingface-cli download {REPO}" in message
    assert ".gguf" in message and "local Hugging Face model folder" in message
    with pytest.raises(BaseModelError, match="only partly"):
        pin_base(REPO)  # nothing to pin either


def test_snapshot_listing_other_files_still_loads(hf_cache, tiny_folders, tmp_path) -> None:
    """A download restricted to what the model needs (the hub lists a README too) is complete
    enough: huggingface_hub calls it incomplete, load_base loads it."""
    source = tmp_path / "with-readme"
    shutil.copytree(tiny_folders[0], source)
    (source / "README.md").write_text("model card\n")
    add_snapshot(hf_cache, REPO, source, REV_A, skip=("README.md",), listing=True)
    model, tok = load_base(REPO, device="cpu")
    _check_ready(model, tok)


# --- pinning a local folder or a GGUF file --------------------------------------------------------


def test_pin_local_folder_detects_missing_and_changed_files(tmp_path: Path, tiny_folders) -> None:
    folder = tmp_path / "base"
    shutil.copytree(tiny_folders[0], folder)
    (folder / "README.md").write_text("not part of the digest\n")
    ref = pin_base(str(folder))
    assert ref["kind"] == "local" and ref["spec"] == str(folder.resolve())
    assert ref["digest"].startswith("sha256:") and len(ref["digest"]) == 7 + 64
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(ref["files"])
    assert "README.md" not in ref["files"]
    json.dumps(ref)  # JSON-able
    model, tok = load_pinned(ref, device="cpu", origin="test ref")
    _check_ready(model, tok)
    (folder / "README.md").write_text("edited: still fine\n")
    check_pinned(ref)

    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-5}))
    with pytest.raises(BaseModelError) as err:
        load_pinned(ref, device="cpu", origin="test ref")
    message = str(err.value)
    assert f"base model folder {folder.resolve()} (pinned in test ref) has changed" in message
    assert "config.json changed size" in message or "config.json changed content" in message
    assert ref["digest"] in message and "put them back" in message

    shutil.copyfile(tiny_folders[0] / "config.json", folder / "config.json")
    check_pinned(ref)  # restored: fine again
    shutil.copyfile(tiny_folders[1] / "model.safetensors", folder / "model.safetensors")
    (folder / "added_tokens.json").write_text("{}")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(BaseModelError) as err:
        check_pinned(ref, "test ref")
    message = str(err.value)
    assert "model.safetensors changed content (same size, other sha256)" in message
    assert "added_tokens.json was added" in message and "tokenizer.json is missing" in message

    shutil.rmtree(folder)
    with pytest.raises(BaseModelError) as err:
        load_pinned(ref, origin="test ref")
    assert f"base model folder {folder.resolve()} (pinned in test ref, not copied" in str(err.value)
    assert "does not exist on this machine" in str(err.value)


def test_pin_gguf_file_by_size_and_sha256(tmp_path: Path) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    ref = pin_base(str(gguf))
    assert ref["kind"] == "gguf" and ref["spec"] == str(gguf.resolve())
    assert ref["size"] == gguf.stat().st_size and len(ref["sha256"]) == 64
    check_pinned(ref)
    data = bytearray(gguf.read_bytes())
    data[100] ^= 1
    gguf.write_bytes(bytes(data))
    with pytest.raises(BaseModelError, match="same size, other sha256"):
        check_pinned(ref, "test ref")
    gguf.write_bytes(bytes(data) + b"more")
    with pytest.raises(BaseModelError, match=r"size \d+ -> \d+ bytes"):
        check_pinned(ref, "test ref")
    gguf.unlink()
    with pytest.raises(BaseModelError, match=f"GGUF file {gguf} .*does not exist"):
        load_pinned(ref, origin="test ref")
    with pytest.raises(BaseModelError, match="GGUF file not found"):
        pin_base(str(gguf))


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ({"kind": "zip", "spec": "x"}, "field 'kind' is 'zip'; expected 'hub', 'local' or 'gguf'"),
        ({"kind": "local"}, "field 'spec' is None; expected str"),
        ({"kind": "local", "spec": "/x", "digest": "sha256:0"}, "field 'files' is None"),
        ({"kind": "hub", "spec": REPO, "revision": 7}, "field 'revision' is 7; expected str"),
    ],
)
def test_damaged_pin_record_is_named(ref: dict, message: str) -> None:
    with pytest.raises(BaseModelError) as err:
        load_pinned(ref, origin="base_ref.json")
    assert message in str(err.value) and "base_ref.json" in str(err.value)


def test_tiny_and_missing_paths_are_not_pinned(tmp_path: Path) -> None:
    with pytest.raises(BaseModelError, match="bundle"):
        pin_base("tiny")
    with pytest.raises(BaseModelError, match="no model folder or file"):
        pin_base(str(tmp_path / "nothing-here"))
    with pytest.raises(BaseModelError, match=r"no config\.json"):
        pin_base(str(tmp_path))


# --- opt-in: the real Qwen2.5 0.5B as a GGUF file (LV_QWEN_GGUF=/path/to/file.gguf) ---------------

QWEN_GGUF = os.environ.get("LV_QWEN_GGUF")


@pytest.fixture(scope="module")
def qwen_gguf():
    if not QWEN_GGUF or not Path(QWEN_GGUF).is_file():
        pytest.skip("set LV_QWEN_GGUF to a Qwen2.5 GGUF file (../shared/tools/qwen-gguf makes one)")
    pytest.importorskip("gguf")
    return load_base(QWEN_GGUF, dtype=torch.float32, device="cpu")


@pytest.mark.realmodel
@pytest.mark.slow
def test_real_gguf_tokenizer_matches_tiny(qwen_gguf) -> None:
    model, tok = qwen_gguf
    _check_ready(model, tok)
    assert tok("1.23")["input_ids"] == [16, 13, 17, 18]
    assert tok.pad_token_id == 151643 and tok.pad_token == "<|endoftext|>"
    assert tok.convert_tokens_to_ids("<|im_end|>") == 151645
    eos = model.generation_config.eos_token_id
    assert 151645 in (eos if isinstance(eos, list) else [eos])
    text = format_series(np.random.default_rng(0).uniform(0, 12, size=(20, 2))) + ";"
    assert tok(text)["input_ids"] == build_tiny_tokenizer()(text)["input_ids"]
    info = describe_base(model)
    assert (info["hidden_size"], info["num_hidden_layers"]) == (896, 24)
    assert (info["num_attention_heads"], info["num_key_value_heads"]) == (14, 2)
    assert info["vocab_size"] == 151936


@pytest.mark.realmodel
@pytest.mark.slow
def test_real_gguf_batched_generate(qwen_gguf) -> None:
    model, tok = qwen_gguf
    enc = tok(["0.10,0.20;0.30,0.40;0.50,0.60;", "1.00,2.00;"], return_tensors="pt", padding=True)
    assert enc["attention_mask"][1, 0] == 0 and enc["input_ids"][1, 0] == 151643
    out = model.generate(**enc, max_new_tokens=3, do_sample=False)
    assert out.shape == (2, enc["input_ids"].shape[1] + 3)


@pytest.mark.realmodel
@pytest.mark.slow
def test_real_gguf_zero_shot_forecasts_are_valid(qwen_gguf, coursework) -> None:
    """Zero-shot, coursework validation series, 512-token context, horizon 5: >= 95% valid."""
    import lvdata
    from lvmodel.evaluate import evaluate_llm

    model, tok = qwen_gguf
    parts = lvdata.split(coursework.n_series, seed=0)
    codec = lvdata.LLMTimeCodec.fit(coursework.values[parts.train])
    val = coursework.values[parts.val[:8]]
    ev = evaluate_llm(
        model, tok, codec, val, history_steps=50, horizon=5, context_length=512, batch_size=8
    )
    assert ev.metrics["invalid_rate"] <= 0.05
    assert ev.result is not None and ev.result.prompt_tokens <= 8 * 512
    print(f"real GGUF zero-shot: {ev.metrics} in {ev.result.seconds:.1f} s")


@pytest.mark.realmodel
@pytest.mark.slow
def test_real_gguf_sampled_forecasts_are_well_formed_with_ordered_quantiles(
    qwen_gguf, coursework
) -> None:
    """Sampling as `final` and the report score, on the real vocabulary (151,936 tokens): top-p
    after the grammar's mask keeps every sample well-formed, the quantiles are those of the
    numbers the samples wrote, and a vanishing top-p leaves only the greedy continuation."""
    import re

    import lvdata
    from lvmodel.forecast import forecast

    model, tok = qwen_gguf
    parts = lvdata.split(coursework.n_series, seed=0)
    codec = lvdata.LLMTimeCodec.fit(coursework.values[parts.train])
    histories = list(coursework.values[parts.val[:3], :50])
    kw = {"context_length": 256, "batch_size": 3, "seed": 0}
    f = forecast(model, tok, codec, histories, 5, num_samples=5, top_p=0.9, **kw)
    number = r"(?:0|[1-9]\d?)\.\d{2}"  # the grammar's: no leading zero
    assert f.invalid_rate == 0.0
    for texts in f.texts:
        assert len(texts) == 5 and all(
            re.fullmatch(rf"(?:{number},{number};){{5}}", t) for t in texts
        ), texts
    # The quantiles and the median, against the numbers read from the texts (x alpha).
    written = np.array(
        [
            [
                [[float(v) * codec.alpha for v in st.split(",")] for st in t.split(";")[:5]]
                for t in ts
            ]
            for ts in f.texts
        ]
    )  # (series, samples, steps, vars)
    q = f.quantiles((0.1, 0.5, 0.9))
    np.testing.assert_allclose(
        q, np.moveaxis(np.quantile(written, [0.1, 0.5, 0.9], 1), 0, -1), rtol=1e-6
    )
    assert np.all(q[..., 0] <= q[..., 1]) and np.all(q[..., 1] <= q[..., 2])
    np.testing.assert_allclose(f.values, np.median(written, axis=1), rtol=1e-6)
    assert len({t for ts in f.texts for t in ts}) > len(histories)  # the samples differ
    greedy = forecast(model, tok, codec, histories, 5, **kw)
    narrow = forecast(model, tok, codec, histories, 5, num_samples=2, top_p=1e-9, **kw)
    for texts, (one,) in zip(narrow.texts, greedy.texts, strict=True):
        assert texts == [one, one]
    print(
        f"real GGUF sampled: 3 series x 5 samples in {f.seconds:.1f} s, greedy {greedy.seconds:.1f} s"
    )


@pytest.mark.realmodel
@pytest.mark.slow
def test_real_gguf_lora_steps_at_context_128(coursework) -> None:
    """A few LoRA steps on the real model (a private copy: the module fixture stays untouched)."""
    import lvdata
    from lvmodel.config import TrainConfig
    from lvmodel.lora import LoraSettings, apply_lora, parameter_counts
    from lvmodel.train import fit

    if not QWEN_GGUF or not Path(QWEN_GGUF).is_file():
        pytest.skip("set LV_QWEN_GGUF to a Qwen2.5 GGUF file")
    model, tok = load_base(QWEN_GGUF, dtype=torch.float32, device="cpu")
    lora = LoraSettings(rank=4)
    model = apply_lora(model, lora)
    trainable, _ = parameter_counts(model)
    assert trainable == 270_336 + 151_936  # LoRA r=4 on q/v (DESIGN) + the lm_head bias
    parts = lvdata.split(coursework.n_series, seed=0)
    codec = lvdata.LLMTimeCodec.fit(coursework.values[parts.train])
    config = TrainConfig(
        steps=3,
        lr=1e-4,
        batch_size=1,
        context_length=128,
        eval_every=0,
        eval_windows=2,
        forecast_series=0,
    )
    result = fit(
        model,
        tok,
        codec,
        coursework.values[parts.train[:4]],
        coursework.values[parts.val[:2]],
        config,
        lora,
        progress=False,
    )
    assert result.steps == 3 and np.isfinite(result.final["train_loss"])
    print(f"real GGUF LoRA: {result.history}")


# --- the shape of a base without its weights (plans before a run is admitted) -------------------


def test_base_shape_reads_the_config_of_every_kind(hf_cache, tiny_folders) -> None:
    a, _ = tiny_folders
    loaded = ModelShape.from_hf_config(load_base(str(a), device="cpu")[0].config.to_dict())
    assert base_shape(str(a)) == loaded  # a local folder
    add_snapshot(hf_cache, REPO, a, REV_A)
    assert base_shape(REPO) == loaded  # a hub id from its cached snapshot
    assert base_shape(REPO, revision=REV_A) == loaded
    assert loaded.hidden_size > 0 and loaded.num_layers >= 1


def test_base_shape_refuses_what_load_base_refuses(hf_cache, tiny_folders, tmp_path) -> None:
    with pytest.raises(BaseModelError, match="no model folder or file"):
        base_shape(str(tmp_path / "nothing" / "here"))
    with pytest.raises(BaseModelError, match="GGUF file not found"):
        base_shape(str(tmp_path / "missing.gguf"))
    with pytest.raises(BaseModelError, match="not in the local Hugging Face cache"):
        base_shape("lv-tests/never-cached")
    add_snapshot(hf_cache, REPO, tiny_folders[0], REV_A, skip=("config.json",))
    with pytest.raises(BaseModelError, match="only partly"):
        base_shape(REPO)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(BaseModelError, match="could not read the header of GGUF file"):
        base_shape(str(bad))
