#!/usr/bin/python3
"""Convert a llama2.c checkpoint (legacy version 0, f32) and its llama2.c tokenizer to a GGUF v3
file, laid out as llama.cpp's own converter (`llama-convert-llama2c-to-ggml`) lays out
../shared/models/stories260K.gguf: architecture `llama`, f32 tensors, the classifier written out
as `output.weight`, Q and K unpermuted (llama2.c already rotates adjacent pairs, llama.cpp's
"normal" RoPE), and the tokenizer as a `llama` (SentencePiece) vocabulary with scores and token
types. Unlike that converter, `llama.context_length` is the checkpoint's seq_len (it writes 128).

Usage: scripts/llama2c_to_gguf.py MODEL.bin TOKENIZER.bin OUT.gguf [--name NAME]
Standard library only.
"""
import argparse
import array
import os
import struct
import sys

ALIGN = 32
T_U32, T_F32, T_STR, T_ARR, T_I32 = 4, 6, 8, 9, 5


def fail(path, msg):
    sys.exit(f"{path}: {msg}")


def read_checkpoint(path):
    raw = open(path, "rb").read()
    if len(raw) < 28:
        fail(path, "shorter than the 28-byte llama2.c header")
    dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len = struct.unpack_from("<7i", raw)
    shared = vocab > 0
    vocab = abs(vocab)
    if min(dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len) <= 0 or dim % n_heads or n_heads % n_kv:
        fail(path, f"implausible header {dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len}")
    hd = dim // n_heads
    kv_dim = n_kv * hd
    floats = array.array("f")
    floats.frombytes(raw[28 : 28 + (len(raw) - 28) // 4 * 4])
    pos = 0

    def take(*shape):
        nonlocal pos
        n = 1
        for s in shape:
            n *= s
        if pos + n > len(floats):
            fail(path, f"truncated: needs at least {(28 + 4 * (pos + n))} bytes")
        out = floats[pos : pos + n]
        pos += n
        return out, shape

    w = {"tok": take(vocab, dim)}
    for name, shape in [("att_norm", (dim,)), ("wq", (dim, dim)), ("wk", (kv_dim, dim)), ("wv", (kv_dim, dim)),
                        ("wo", (dim, dim)), ("ffn_norm", (dim,)), ("w1", (hidden, dim)), ("w2", (dim, hidden)),
                        ("w3", (hidden, dim))]:
        w[name] = [take(*shape) for _ in range(n_layers)]
    w["norm"] = take(dim)
    take(seq_len, hd // 2)  # freq_cis real and imaginary parts: the runtime computes RoPE itself
    take(seq_len, hd // 2)
    w["out"] = w["tok"] if shared else take(vocab, dim)
    cfg = dict(dim=dim, hidden=hidden, n_layers=n_layers, n_heads=n_heads, n_kv=n_kv, vocab=vocab, seq_len=seq_len)
    return cfg, w


def read_tokenizer(path, vocab):
    raw = open(path, "rb").read()
    pos = 4
    tokens, scores = [], []
    for i in range(vocab):
        if pos + 8 > len(raw):
            fail(path, f"truncated at token {i} of {vocab}")
        score, n = struct.unpack_from("<fi", raw, pos)
        pos += 8
        if n < 0 or pos + n > len(raw):
            fail(path, f"token {i}: length {n} runs past the end")
        tokens.append(raw[pos : pos + n])
        scores.append(score)
        pos += n
    texts, types = [], []
    for i, t in enumerate(tokens):
        if i == 0:
            texts.append(b"<unk>"), types.append(2)
        elif i in (1, 2):
            texts.append([b"<s>", b"</s>"][i - 1]), types.append(3)
        elif t.startswith(b"<0x") and t.endswith(b">") and len(t) == 6:
            texts.append(t), types.append(6)
        else:
            texts.append(t.replace(b" ", "\u2581".encode())), types.append(1)
    return texts, scores, types


class Writer:
    def __init__(self):
        self.kv = bytearray()
        self.n_kv = 0

    @staticmethod
    def _str(s):
        b = s if isinstance(s, bytes) else s.encode()
        return struct.pack("<Q", len(b)) + b

    def add(self, key, typ, value):
        self.n_kv += 1
        self.kv += self._str(key) + struct.pack("<I", typ)
        if typ == T_STR:
            self.kv += self._str(value)
        elif typ == T_U32:
            self.kv += struct.pack("<I", value)
        elif typ == T_F32:
            self.kv += struct.pack("<f", value)

    def add_array(self, key, elem, values):
        self.n_kv += 1
        self.kv += self._str(key) + struct.pack("<IIQ", T_ARR, elem, len(values))
        for v in values:
            self.kv += self._str(v) if elem == T_STR else struct.pack("<f" if elem == T_F32 else "<i", v)


def convert(model, tokenizer, out, name):
    cfg, w = read_checkpoint(model)
    texts, scores, types = read_tokenizer(tokenizer, cfg["vocab"])
    g = Writer()
    g.add_array("tokenizer.ggml.tokens", T_STR, texts)
    g.add_array("tokenizer.ggml.scores", T_F32, scores)
    g.add_array("tokenizer.ggml.token_type", T_I32, types)
    g.add("tokenizer.ggml.model", T_STR, "llama")
    g.add("general.architecture", T_STR, "llama")
    g.add("general.name", T_STR, name)
    g.add("tokenizer.ggml.unknown_token_id", T_U32, 0)
    g.add("tokenizer.ggml.bos_token_id", T_U32, 1)
    g.add("tokenizer.ggml.eos_token_id", T_U32, 2)
    g.add("llama.context_length", T_U32, cfg["seq_len"])
    g.add("llama.embedding_length", T_U32, cfg["dim"])
    g.add("llama.feed_forward_length", T_U32, cfg["hidden"])
    g.add("llama.attention.head_count", T_U32, cfg["n_heads"])
    g.add("llama.attention.head_count_kv", T_U32, cfg["n_kv"])
    g.add("llama.block_count", T_U32, cfg["n_layers"])
    g.add("llama.rope.dimension_count", T_U32, cfg["dim"] // cfg["n_heads"])
    g.add("llama.attention.layer_norm_rms_epsilon", T_F32, 1e-5)
    tensors = [("token_embd.weight", w["tok"]), ("output_norm.weight", w["norm"]), ("output.weight", w["out"])]
    for i in range(cfg["n_layers"]):
        for gname, key in [("attn_q", "wq"), ("attn_k", "wk"), ("attn_v", "wv"), ("attn_output", "wo"),
                           ("attn_norm", "att_norm"), ("ffn_gate", "w1"), ("ffn_down", "w2"), ("ffn_up", "w3"),
                           ("ffn_norm", "ffn_norm")]:
            tensors.append((f"blk.{i}.{gname}.weight", w[key][i]))
    info, offset = bytearray(), 0
    for tname, (data, shape) in tensors:
        dims = list(reversed(shape))  # GGUF lists the fastest-varying dimension first
        info += Writer._str(tname) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
        info += struct.pack("<IQ", 0, offset)  # type 0 = f32
        offset += (len(data) * 4 + ALIGN - 1) // ALIGN * ALIGN
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), g.n_kv) + bytes(g.kv) + bytes(info)
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(head + bytes((-len(head)) % ALIGN))
        for _, (data, _) in tensors:
            b = data.tobytes()
            f.write(b + bytes((-len(b)) % ALIGN))
    os.replace(tmp, out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("tokenizer")
    p.add_argument("out")
    p.add_argument("--name", default="llama")
    a = p.parse_args()
    convert(a.model, a.tokenizer, a.out, a.name)


if __name__ == "__main__":
    main()
