"""GPT-2 in eager PyTorch with a KV cache, loaded from a Hugging Face GPT-2 folder.

The projections are nn.Linear (weights transposed from the checkpoint's Conv1D [in, out]
layout) so that torch.quantization.quantize_dynamic can replace them, because it does not
touch transformers' Conv1D. The output head is an nn.Linear that shares wte's weight, so it is
quantized too. The arithmetic follows GPT2LMHeadModel: pre-LayerNorm blocks, GELU with the tanh
approximation ("gelu_new"), causal attention scaled by 1/sqrt(head_dim), tied head.
"""
import json
import math
import os
import struct

import torch
import torch.nn as nn
import torch.nn.functional as F

SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def read_safetensors(path):
    """Yield (name, float32 tensor) pairs, with the "transformer." prefix removed.

    Tensors are read one at a time into their own buffers. Loading therefore never keeps a
    second copy of the whole file in memory, and the peak RSS stays close to the model's size.
    """
    with open(path, "rb") as f:
        header_len = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(header_len))
        data_start = 8 + header_len
        for name, info in header.items():
            if name == "__metadata__":
                continue
            dtype = SAFETENSORS_DTYPES.get(info["dtype"])
            if dtype is None:
                raise ValueError(f"{path}: tensor {name} has dtype {info['dtype']}, "
                                 f"expected one of {sorted(SAFETENSORS_DTYPES)}")
            begin, end = info["data_offsets"]
            raw = torch.empty(end - begin, dtype=torch.uint8)
            f.seek(data_start + begin)
            if f.readinto(raw.numpy()) != end - begin:
                raise ValueError(f"{path}: tensor {name} is truncated")
            tensor = raw.view(dtype).reshape(info["shape"]).to(torch.float32)
            yield name.removeprefix("transformer."), tensor


def read_config(model_dir):
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    if cfg.get("model_type") != "gpt2":
        raise ValueError(f"{model_dir}/config.json: model_type is {cfg.get('model_type')!r}, "
                         "expected 'gpt2'")
    return cfg


class Block(nn.Module):
    def __init__(self, n_embd, n_head, n_inner, eps, device):
        super().__init__()
        self.n_head = n_head
        self.ln_1 = nn.LayerNorm(n_embd, eps=eps, device=device)
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, device=device)
        self.attn_proj = nn.Linear(n_embd, n_embd, device=device)
        self.ln_2 = nn.LayerNorm(n_embd, eps=eps, device=device)
        self.c_fc = nn.Linear(n_embd, n_inner, device=device)
        self.mlp_proj = nn.Linear(n_inner, n_embd, device=device)

    def attention(self, x, cache, pos):
        # x: [B, T, C]; cache: (k, v), each [B, H, n_ctx, head_dim]; pos: position of x[:, 0].
        B, T, C = x.shape
        head_dim = C // self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (z.view(B, T, self.n_head, head_dim).transpose(1, 2) for z in (q, k, v))
        k_cache, v_cache = cache
        k_cache[:, :, pos:pos + T] = k
        v_cache[:, :, pos:pos + T] = v
        keys, values = k_cache[:, :, :pos + T], v_cache[:, :, :pos + T]

        scores = (q @ keys.transpose(-1, -2)) / math.sqrt(head_dim)  # [B, H, T, pos + T]
        if T > 1:
            # Query i is at position pos + i and attends to keys 0 .. pos + i.
            future = torch.ones(T, pos + T, dtype=torch.bool).triu(pos + 1)
            scores = scores.masked_fill(future, float("-inf"))
        y = scores.softmax(-1) @ values
        return self.attn_proj(y.transpose(1, 2).reshape(B, T, C))

    def forward(self, x, cache, pos):
        x = x + self.attention(self.ln_1(x), cache, pos)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT2(nn.Module):
    """GPT2LMHeadModel for batch inference. Build it with device="meta" to allocate nothing,
    then give it weights with assign_weights."""

    def __init__(self, cfg, device=None):
        super().__init__()
        d, V = cfg["n_embd"], cfg["vocab_size"]
        n_inner = cfg.get("n_inner") or 4 * d
        eps = cfg.get("layer_norm_epsilon", 1e-5)
        self.n_ctx, self.n_head = cfg["n_positions"], cfg["n_head"]
        self.wte = nn.Embedding(V, d, device=device)
        self.wpe = nn.Embedding(self.n_ctx, d, device=device)
        self.h = nn.ModuleList(Block(d, self.n_head, n_inner, eps, device)
                               for _ in range(cfg["n_layer"]))
        self.ln_f = nn.LayerNorm(d, eps=eps, device=device)
        self.lm_head = nn.Linear(d, V, bias=False, device=device)
        self.lm_head.weight = self.wte.weight

    def new_cache(self, batch=1, length=None):
        """Allocate a KV cache for length tokens (default n_positions): one (k, v) pair per
        layer."""
        d = self.wte.embedding_dim
        dtype = self.wte.weight.dtype
        shape = (batch, self.n_head, length or self.n_ctx, d // self.n_head)
        return [(torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype)) for _ in self.h]

    def forward(self, ids, cache, pos=0, all_logits=False):
        """Run ids [B, T] at positions pos .. pos + T - 1, writing their K/V into cache.

        Returns logits [B, T, V] with all_logits, else only the last position's [B, V], which
        is all that generation needs.
        """
        T = ids.shape[1]
        if pos + T > min(self.n_ctx, cache[0][0].shape[2]):
            raise ValueError(f"positions {pos}..{pos + T - 1} exceed n_positions {self.n_ctx} "
                             f"or the cache length {cache[0][0].shape[2]}")
        x = self.wte(ids) + self.wpe(torch.arange(pos, pos + T))
        for block, layer_cache in zip(self.h, cache):
            x = block(x, layer_cache, pos)
        if not all_logits:
            x = x[:, -1]
        return self.lm_head(self.ln_f(x))


# Checkpoint module names (Conv1D) and the nn.Linear names they load into.
CONV1D_RENAMES = {".attn.c_attn.": ".c_attn.", ".attn.c_proj.": ".attn_proj.",
                  ".mlp.c_fc.": ".c_fc.", ".mlp.c_proj.": ".mlp_proj."}


def assign_weights(model, named_tensors):
    """Install checkpoint tensors as model's parameters, transposing Conv1D [in, out] weights.

    Raises ValueError when a parameter is missing or has the wrong shape, or when an untied
    lm_head.weight is present.
    """
    expected = dict(model.named_parameters())
    seen = set()
    head = None
    for name, tensor in named_tensors:
        if name.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # causal-mask buffers stored by older checkpoints
        if name == "lm_head.weight":
            head = tensor
            continue
        for old, new in CONV1D_RENAMES.items():
            if old in name:
                name = name.replace(old, new)
                if name.endswith(".weight"):
                    tensor = tensor.t().contiguous()
        if name not in expected or expected[name].shape != tensor.shape:
            want = tuple(expected[name].shape) if name in expected else "no such parameter"
            raise ValueError(f"tensor {name} {tuple(tensor.shape)}: expected {want}")
        module_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(module_name), attr, nn.Parameter(tensor, requires_grad=False))
        seen.add(name)
    missing = set(expected) - seen - {"lm_head.weight"}
    if missing:
        raise ValueError(f"checkpoint is missing {sorted(missing)}")
    model.lm_head.weight = model.wte.weight
    if head is not None and not torch.equal(head, model.wte.weight):
        raise ValueError("lm_head.weight differs from wte.weight; only tied heads are supported")


def load_model(model_dir):
    """Return (model, config) for a Hugging Face GPT-2 folder with model.safetensors."""
    cfg = read_config(model_dir)
    model = GPT2(cfg, device="meta")
    assign_weights(model, read_safetensors(os.path.join(model_dir, "model.safetensors")))
    return model.eval(), cfg


def count_dynamic_int8_linears(model):
    return sum(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in model.modules())


def quantize_int8(model, engine):
    """Replace every nn.Linear, the tied output head included, by quantize_dynamic's int8
    version for the quantized engine named (for example "onednn" or "qnnpack"): per-tensor
    weight scales, activations quantized per call. Works in place, so the fp32 weights of the
    projections are freed; wte stays fp32 for the embedding lookup.

    Returns the number of replaced modules. Raises RuntimeError if any nn.Linear was left,
    so that an "int8" run cannot silently measure fp32 layers.
    """
    torch.backends.quantized.engine = engine
    n_linear = sum(isinstance(m, nn.Linear) for m in model.modules())
    torch.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)
    n_quantized = count_dynamic_int8_linears(model)
    if n_quantized == 0 or n_quantized != n_linear:
        raise RuntimeError(f"quantize_dynamic replaced {n_quantized} of {n_linear} nn.Linear "
                           "modules; expected all")
    if engine == "qnnpack":
        # qnnpack ignores reduce_range and, in torch 1.13, logs a warning on every call that
        # requests it. Module version 3 makes forward() call linear_dynamic without it, which
        # computes the same result without the warning.
        for m in model.modules():
            if isinstance(m, torch.ao.nn.quantized.dynamic.Linear):
                m.version = 3
    return n_quantized
