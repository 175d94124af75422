"""The fast GGUF header reader against the `gguf` package's own writer and reader."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from lvflops import QWEN2_5_0_5B, ModelShape  # noqa: E402
from lvmodel.gguf_header import GGUFHeaderError, gguf_hf_config, read_header  # noqa: E402


def _write(path: Path, *, tied: bool, arch: str = "qwen2") -> Path:
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(3)
    w.add_context_length(4096)
    w.add_embedding_length(64)
    w.add_feed_forward_length(176)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_rope_freq_base(1e6)
    w.add_layer_norm_rms_eps(1e-6)
    tokens = [f"tok{i}" for i in range(300)]
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_merges(["t o", "o k"])
    w.add_array("lv.test.floats", [0.5, 1.5, 2.5])
    w.add_string("lv.test.note", "héllo")
    w.add_uint64("lv.test.big", 2**40)
    w.add_bool("lv.test.flag", True)
    w.add_tensor("token_embd.weight", np.zeros((300, 64), dtype=np.float32))
    if not tied:
        w.add_tensor("output.weight", np.zeros((300, 64), dtype=np.float32))
    w.add_tensor("blk.0.attn_q.weight", np.zeros((64, 64), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("tied", [True, False])
def test_header_matches_the_gguf_packages_reader(tmp_path, tied):
    path = _write(tmp_path / "m.gguf", tied=tied)
    meta, names = read_header(path)
    reader = gguf.GGUFReader(str(path))
    assert names == [t.name for t in reader.tensors]
    for key, f in reader.fields.items():
        if key.startswith("GGUF."):
            continue  # the reader's own bookkeeping fields (version, counts)
        expected = f.contents()
        if isinstance(expected, list):
            assert meta[key] == len(expected), key  # arrays come back as their length
        elif isinstance(expected, float):
            assert meta[key] == pytest.approx(expected), key
        else:
            assert meta[key] == expected, key
    assert meta["lv.test.note"] == "héllo" and meta["lv.test.big"] == 2**40


@pytest.mark.parametrize("tied", [True, False])
def test_hf_config_gives_the_shape(tmp_path, tied):
    config = gguf_hf_config(_write(tmp_path / "m.gguf", tied=tied))
    shape = ModelShape.from_hf_config(config)
    assert shape == ModelShape(
        hidden_size=64,
        num_layers=3,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        intermediate_size=176,
        vocab_size=300,
        tie_word_embeddings=tied,
    )
    assert config["rope_theta"] == 1e6


def test_bad_files_are_named(tmp_path):
    bad = tmp_path / "not.gguf"
    bad.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(GGUFHeaderError, match="not a GGUF file"):
        read_header(bad)
    with pytest.raises(GGUFHeaderError, match="architecture 'llama'"):
        gguf_hf_config(_write(tmp_path / "llama.gguf", tied=True, arch="llama"))


@pytest.mark.realmodel
@pytest.mark.skipif(not os.environ.get("LV_QWEN_GGUF"), reason="set LV_QWEN_GGUF")
def test_the_real_qwen_file_has_the_qwen2_5_shape():
    config = gguf_hf_config(os.environ["LV_QWEN_GGUF"])
    shape = ModelShape.from_hf_config(config)
    # Qwen2.5-Coder-0.5B: the 0.5B shape with an untied output head.
    assert shape == ModelShape(**{**QWEN2_5_0_5B.__dict__, "tie_word_embeddings": False})
