"""Write a tiny real llama-architecture GGUF (2 layers, hidden 64, random weights) whose
tokenizer is copied from the SmolLM2 GGUF: a fast, real model for llama.cpp tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_tiny_llama(source_gguf: Path, out: Path, seed: int = 0, n_layer: int = 2, hidden: int = 64) -> Path:
    import gguf

    reader = gguf.GGUFReader(str(source_gguf))

    def field(name):
        f = reader.fields[name]
        return f.contents() if hasattr(f, "contents") else f.parts[f.data[0]]

    tokens = field("tokenizer.ggml.tokens")
    vocab = len(tokens)
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(out), "llama")
    w.add_name("qroute-tiny-test")
    w.add_context_length(512)
    w.add_embedding_length(hidden)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(hidden * 2)
    w.add_head_count(4)
    w.add_head_count_kv(4)
    w.add_rope_dimension_count(hidden // 4)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(0)  # all f32
    w.add_tokenizer_model(field("tokenizer.ggml.model"))
    w.add_tokenizer_pre(field("tokenizer.ggml.pre"))
    w.add_token_list(tokens)
    w.add_token_types(field("tokenizer.ggml.token_type"))
    w.add_token_merges(field("tokenizer.ggml.merges"))
    w.add_bos_token_id(int(field("tokenizer.ggml.bos_token_id")))
    w.add_eos_token_id(int(field("tokenizer.ggml.eos_token_id")))
    w.add_add_bos_token(False)
    w.add_chat_template(field("tokenizer.chat_template"))

    def t(name, *shape):
        w.add_tensor(name, (rng.standard_normal(shape) * 0.3).astype(np.float32))

    t("token_embd.weight", vocab, hidden)
    w.add_tensor("output_norm.weight", np.ones(hidden, dtype=np.float32))
    t("output.weight", vocab, hidden)
    for i in range(n_layer):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, dtype=np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            t(f"blk.{i}.{name}.weight", hidden, hidden)
        t(f"blk.{i}.ffn_gate.weight", hidden * 2, hidden)
        t(f"blk.{i}.ffn_up.weight", hidden * 2, hidden)
        t(f"blk.{i}.ffn_down.weight", hidden, hidden * 2)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out
