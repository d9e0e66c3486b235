#!/usr/bin/python3
"""Writes the PyTorch reference dump that the CPU backend is checked against.

A tiny GPT-2 (llm.c's conventions, our parameter names and layouts) is written out by hand
in torch -- no nn.Module layers -- and evaluated in float64, so the dump is the exact math
up to the final rounding to float32. The dump holds the initial weights, a batch of tokens,
the logits, loss and gradients of one forward/backward pass, and a 10-step AdamW trajectory
with global-norm gradient clipping. CI never runs torch: it reads the committed file.

Before writing, the script checks itself: autograd gradients against central finite
differences, the hand-written ops against torch.nn.functional, that the padded vocabulary
columns contribute no loss, and that the written file reads back bit for bit. It also runs
the same computation in float32 and prints how far that lands from the float64 reference,
which is the error a correct float32 implementation should expect.

Usage (Debian's torch; the pyenv python3 first on PATH has none):
    /usr/bin/python3 scripts/make_reference.py [--out tests/data/gpt2_tiny_reference.safetensors]
"""
import argparse
import json
import math
import struct
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "tests" / "data" / "gpt2_tiny_reference.safetensors"

# Everything the dump depends on; all of it is also written to the file's metadata.
CONFIG = {
    "vocab_size": 61,          # V: real tokens; loss and targets use only these
    "padded_vocab_size": 64,   # Vp: rows of wte (61..63 are zero padding)
    "max_seq_len": 32,         # rows of wpe
    "n_layer": 2,
    "n_head": 4,
    "n_embd": 64,              # C
    "ffn_hidden": 256,         # 4*C
    "batch_size": 4,           # B
    "seq_len": 32,             # T
    "layernorm_eps": 1e-5,
    "init_seed": 1337,         # torch.manual_seed for the weights
    "token_seed": 42,          # torch.manual_seed for the tokens
    "init_std": 0.02,          # weights and embeddings
    "residual_proj_std": 0.02 / math.sqrt(2 * 2),  # attn.proj.weight, mlp.proj.weight
    "bias_std": 0.02,          # biases are random so that their gradients are tested
    "ln_weight_noise_std": 0.05,  # LayerNorm weights are 1 + N(0, this)
    "ln_bias_std": 0.02,
    "adamw_steps": 10,
    "lr": 1e-3,                # constant, no warmup or decay
    "beta1": 0.9,
    "beta2": 0.95,
    "adam_eps": 1e-8,
    "weight_decay": 0.1,       # 2-D tensors only
    "grad_clip": 1.0,          # global L2 norm
}


def param_shapes(cfg):
    """(name, shape) for every parameter, in the order of src/model/param_table.cpp."""
    C, Vp, maxT, ffn = cfg["n_embd"], cfg["padded_vocab_size"], cfg["max_seq_len"], cfg["ffn_hidden"]
    shapes = [("wte", (Vp, C)), ("wpe", (maxT, C))]
    for layer in range(cfg["n_layer"]):
        p = f"h.{layer}."
        shapes += [
            (p + "ln1.weight", (C,)), (p + "ln1.bias", (C,)),
            (p + "attn.qkv.weight", (3 * C, C)), (p + "attn.qkv.bias", (3 * C,)),
            (p + "attn.proj.weight", (C, C)), (p + "attn.proj.bias", (C,)),
            (p + "ln2.weight", (C,)), (p + "ln2.bias", (C,)),
            (p + "mlp.fc.weight", (ffn, C)), (p + "mlp.fc.bias", (ffn,)),
            (p + "mlp.proj.weight", (C, ffn)), (p + "mlp.proj.bias", (C,)),
        ]
    shapes += [("lnf.weight", (C,)), ("lnf.bias", (C,))]
    return shapes


def decays(shape):
    """llm.c's rule: decoupled weight decay on 2-D tensors (embeddings and linear weights)."""
    return len(shape) == 2


def init_params(cfg):
    """Deterministic initial weights, rounded to float32 and returned as float64.

    Rounding first means the float64 reference starts from exactly the float32 values that
    the dump stores, so a consumer loading the dump starts from the same point.
    """
    torch.manual_seed(cfg["init_seed"])
    params = {}
    for name, shape in param_shapes(cfg):
        noise = torch.randn(shape, dtype=torch.float64)
        if name.endswith("proj.weight"):
            value = noise * cfg["residual_proj_std"]
        elif name in ("wte", "wpe") or name.endswith(".weight") and len(shape) == 2:
            value = noise * cfg["init_std"]
        elif ".ln" in name or name.startswith("lnf"):
            if name.endswith(".weight"):
                value = 1.0 + noise * cfg["ln_weight_noise_std"]
            else:
                value = noise * cfg["ln_bias_std"]
        else:  # linear biases
            value = noise * cfg["bias_std"]
        if name == "wte":
            value[cfg["vocab_size"]:] = 0.0  # padded rows: never a token, never a target
        params[name] = value.to(torch.float32).to(torch.float64)
    return params


def make_tokens(cfg):
    """[adamw_steps + 1, B, T + 1] token ids in [0, V); batch k feeds step k, the last is spare."""
    torch.manual_seed(cfg["token_seed"])
    shape = (cfg["adamw_steps"] + 1, cfg["batch_size"], cfg["seq_len"] + 1)
    return torch.randint(0, cfg["vocab_size"], shape, dtype=torch.int64)


# ---------------------------------------------------------------------------------------------
# The model, op by op. Linear weights are [out, in] and used as y = x @ W^T + b.

def layer_norm(x, weight, bias, eps):
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)  # biased variance, as in llm.c
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def causal_self_attention(x, qkv_weight, qkv_bias, n_head):
    B, T, C = x.shape
    head_size = C // n_head
    qkv = x @ qkv_weight.T + qkv_bias                      # [B, T, 3C], columns q | k | v
    q, k, v = qkv.split(C, dim=-1)                         # each [B, T, C] = [B, T, NH*HS]
    q, k, v = (t.view(B, T, n_head, head_size).transpose(1, 2) for t in (q, k, v))  # [B,NH,T,HS]
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(head_size))  # [B, NH, T, T]
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    scores = scores.masked_fill(future, float("-inf"))
    probs = torch.softmax(scores, dim=-1)                  # in the model's dtype (fp64)
    y = probs @ v                                          # [B, NH, T, HS]
    return y.transpose(1, 2).reshape(B, T, C)


def forward(params, inputs, cfg):
    """inputs [B, T] int64 -> logits [B, T, Vp]."""
    B, T = inputs.shape
    eps = cfg["layernorm_eps"]
    x = params["wte"][inputs] + params["wpe"][:T]          # [B, T, C]
    for layer in range(cfg["n_layer"]):
        p = lambda suffix: params[f"h.{layer}.{suffix}"]
        h = layer_norm(x, p("ln1.weight"), p("ln1.bias"), eps)
        h = causal_self_attention(h, p("attn.qkv.weight"), p("attn.qkv.bias"), cfg["n_head"])
        x = x + h @ p("attn.proj.weight").T + p("attn.proj.bias")
        h = layer_norm(x, p("ln2.weight"), p("ln2.bias"), eps)
        h = gelu_tanh(h @ p("mlp.fc.weight").T + p("mlp.fc.bias"))
        x = x + h @ p("mlp.proj.weight").T + p("mlp.proj.bias")
    x = layer_norm(x, params["lnf.weight"], params["lnf.bias"], eps)
    return x @ params["wte"].T                             # tied head, padded rows included


def cross_entropy_loss(logits, targets, vocab_size):
    """Mean over B*T of -log softmax(logits[..., :V])[target]; padded columns are ignored."""
    log_probs = torch.log_softmax(logits[..., :vocab_size], dim=-1)
    return -log_probs.gather(-1, targets.unsqueeze(-1)).mean()


def loss_and_grads(params, batch, cfg):
    """batch [B, T+1] -> (logits, loss, {name: grad of the mean loss})."""
    leaves = {name: value.detach().clone().requires_grad_(True) for name, value in params.items()}
    logits = forward(leaves, batch[:, :-1], cfg)
    loss = cross_entropy_loss(logits, batch[:, 1:], cfg["vocab_size"])
    names = list(leaves)
    grads = torch.autograd.grad(loss, [leaves[n] for n in names])
    return logits.detach(), loss.detach(), dict(zip(names, grads))


# ---------------------------------------------------------------------------------------------
# AdamW by hand, so the formula is exactly what the C++ optimizer must reproduce. Step t = 1, 2, ...
#   norm  = sqrt(sum over every element of every gradient of g^2)          (before clipping)
#   scale = grad_clip / norm if norm > grad_clip else 1                     (llm.c's rule)
#   g     = g * scale
#   m     = beta1 * m + (1 - beta1) * g
#   v     = beta2 * v + (1 - beta2) * g^2
#   m_hat = m / (1 - beta1^t)
#   v_hat = v / (1 - beta2^t)
#   w     = w - lr * (m_hat / (sqrt(v_hat) + eps) + wd * w)    wd = weight_decay on 2-D tensors,
#                                                              0 on biases and LayerNorm weights;
#                                                              the w on the right is pre-update.

def global_grad_norm(grads):
    return torch.sqrt(sum((g.double() ** 2).sum() for g in grads.values())).item()


def adamw_step(params, grads, m, v, t, grad_norm, cfg):
    clip = cfg["grad_clip"]
    scale = clip / grad_norm if grad_norm > clip else 1.0
    b1, b2 = cfg["beta1"], cfg["beta2"]
    for name, w in params.items():
        g = grads[name] * scale
        m[name] = b1 * m[name] + (1.0 - b1) * g
        v[name] = b2 * v[name] + (1.0 - b2) * g * g
        m_hat = m[name] / (1.0 - b1 ** t)
        v_hat = v[name] / (1.0 - b2 ** t)
        wd = cfg["weight_decay"] if decays(w.shape) else 0.0
        params[name] = w - cfg["lr"] * (m_hat / (torch.sqrt(v_hat) + cfg["adam_eps"]) + wd * w)


def train(params, tokens, cfg):
    """Runs adamw_steps steps; step k uses batch k and records its loss before the update."""
    params = {n: w.clone() for n, w in params.items()}
    m = {n: torch.zeros_like(w) for n, w in params.items()}
    v = {n: torch.zeros_like(w) for n, w in params.items()}
    losses, norms = [], []
    for k in range(cfg["adamw_steps"]):
        _, loss, grads = loss_and_grads(params, tokens[k], cfg)
        norm = global_grad_norm(grads)
        adamw_step(params, grads, m, v, k + 1, norm, cfg)
        losses.append(loss.item())
        norms.append(norm)
    return params, losses, norms


def run_reference(params, tokens, cfg):
    """Everything that goes into the dump, computed in the dtype of params."""
    logits, loss, grads = loss_and_grads(params, tokens[0], cfg)
    final, losses, norms = train(params, tokens, cfg)
    _, spare_loss, _ = loss_and_grads(final, tokens[cfg["adamw_steps"]], cfg)
    return {"logits": logits, "loss": loss, "grads": grads, "final": final,
            "losses": losses, "norms": norms, "final_loss": spare_loss.item()}


# ---------------------------------------------------------------------------------------------
# Self-checks. Each raises SystemExit with the failing quantity, so a bad dump is never written.

def fail(message):
    sys.exit(f"make_reference.py: self-check failed: {message}")


def check_finite_differences(params, batch, grads, cfg, count=3, seed=7):
    """Central differences in fp64 on `count` random entries of randomly chosen tensors."""
    rng = np.random.default_rng(seed)
    names = list(params)
    step = 1e-5
    print("finite-difference check (fp64, central, h=1e-5):")
    for name in rng.choice(names, size=count, replace=False):
        w = params[name]
        rows = cfg["vocab_size"] if name == "wte" else w.shape[0]  # skip the zero padded rows
        index = (int(rng.integers(rows)),) + tuple(int(rng.integers(s)) for s in w.shape[1:])

        def loss_at(delta):
            shifted = dict(params)
            shifted[name] = w.clone()
            shifted[name][index] += delta
            logits = forward(shifted, batch[:, :-1], cfg)
            return cross_entropy_loss(logits, batch[:, 1:], cfg["vocab_size"]).item()

        numeric = (loss_at(step) - loss_at(-step)) / (2 * step)
        analytic = grads[name][index].item()
        abs_err = abs(numeric - analytic)
        rel_err = abs_err / max(abs(numeric), abs(analytic), 1e-30)
        print(f"  {name}{list(index)}: autograd {analytic:+.10e}  numeric {numeric:+.10e}"
              f"  rel err {rel_err:.2e}")
        if rel_err > 1e-5 and abs_err > 1e-10:
            fail(f"gradient of {name}{list(index)} differs from finite differences "
                 f"(rel err {rel_err:.2e})")


def check_ops_against_torch(cfg):
    """The hand-written LayerNorm, GELU and attention agree with torch's own versions."""
    gen = torch.Generator().manual_seed(3)
    C, nh = cfg["n_embd"], cfg["n_head"]
    x = torch.randn(2, 5, C, dtype=torch.float64, generator=gen)
    w = torch.randn(C, dtype=torch.float64, generator=gen)
    b = torch.randn(C, dtype=torch.float64, generator=gen)
    eps = cfg["layernorm_eps"]
    errors = {
        "layer_norm": (layer_norm(x, w, b, eps) - F.layer_norm(x, (C,), w, b, eps)).abs().max(),
        "gelu_tanh": (gelu_tanh(x) - F.gelu(x, approximate="tanh")).abs().max(),
    }
    # Attention against nn.MultiheadAttention's functional form with a causal mask; torch
    # packs in_proj the same way (rows q | k | v) but wants [T, B, C] and applies out_proj.
    qkv_w = torch.randn(3 * C, C, dtype=torch.float64, generator=gen) * 0.1
    qkv_b = torch.randn(3 * C, dtype=torch.float64, generator=gen) * 0.1
    T = x.shape[1]
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    xt = x.transpose(0, 1)
    expected, _ = F.multi_head_attention_forward(
        xt, xt, xt, C, nh, qkv_w, qkv_b, None, None, False, 0.0,
        torch.eye(C, dtype=torch.float64), torch.zeros(C, dtype=torch.float64),
        need_weights=False, attn_mask=future)
    errors["attention"] = (causal_self_attention(x, qkv_w, qkv_b, nh)
                           - expected.transpose(0, 1)).abs().max()
    print("hand-written ops vs torch.nn.functional (fp64 max abs diff): "
          + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))
    for op, err in errors.items():
        if err > 1e-12:
            fail(f"{op} differs from torch's by {err:.2e}")


def check_padding_is_inert(params, batch, logits, loss, cfg):
    """Padded wte rows are zero, their logits columns do not reach the loss, and their grads are 0."""
    V = cfg["vocab_size"]
    if params["wte"][V:].abs().max() != 0:
        fail("padded rows of wte are not zero")
    if logits[..., V:].abs().max() != 0:
        fail("padded logits columns are not zero although the padded wte rows are")
    # Give the padded rows large values: the padded columns become large but the loss must not move.
    disturbed = dict(params)
    disturbed["wte"] = params["wte"].clone()
    disturbed["wte"][V:] = 5.0
    logits2 = forward(disturbed, batch[:, :-1], cfg)
    loss2 = cross_entropy_loss(logits2, batch[:, 1:], V)
    if logits2[..., V:].abs().max() == 0 or loss2.item() != loss.item():
        fail(f"padded logits columns change the loss ({loss.item()} -> {loss2.item()})")
    # And the loss has no gradient through the padded columns.
    leaf = logits.clone().requires_grad_(True)
    (grad_logits,) = torch.autograd.grad(cross_entropy_loss(leaf, batch[:, 1:], V), [leaf])
    if grad_logits[..., V:].abs().max() != 0:
        fail("the loss has a gradient with respect to the padded logits columns")
    print("padding check: padded wte rows zero, padded columns do not change the loss or get gradient")


def check_tokens(tokens, cfg):
    if tokens.min() < 0 or tokens.max() >= cfg["vocab_size"]:
        fail(f"token ids outside [0, {cfg['vocab_size']})")


# ---------------------------------------------------------------------------------------------
# safetensors: 8-byte little-endian header length, a JSON header padded with spaces to a
# multiple of 8, then the tensors' bytes back to back (little-endian, row-major).

DTYPES = {"F32": np.dtype("<f4"), "I32": np.dtype("<i4")}


def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, numpy array of float32 or int32); metadata: str -> str."""
    header = {"__metadata__": metadata}
    blobs, offset = [], 0
    for name, array in tensors:
        dtype = {np.float32: "F32", np.int32: "I32"}[array.dtype.type]
        data = np.ascontiguousarray(array, dtype=DTYPES[dtype]).tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes)))
        f.write(header_bytes)
        for data in blobs:
            f.write(data)


def read_safetensors(path):
    raw = Path(path).read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + header_len])
    metadata = header.pop("__metadata__", {})
    data = raw[8 + header_len:]
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        tensors[name] = np.frombuffer(data[begin:end], dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
    return tensors, metadata


def to_f32(t):
    return t.detach().to(torch.float32).numpy()


def build_dump(params, tokens, ref, cfg):
    names = [n for n, _ in param_shapes(cfg)]
    tensors = [("param." + n, to_f32(params[n])) for n in names]
    tensors.append(("tokens", tokens.to(torch.int32).numpy()))
    tensors.append(("logits", to_f32(ref["logits"])))
    tensors.append(("loss", np.array([ref["loss"].item()], dtype=np.float32)))
    tensors += [("grad." + n, to_f32(ref["grads"][n])) for n in names]
    tensors.append(("adamw_losses", np.array(ref["losses"], dtype=np.float32)))
    tensors.append(("adamw_grad_norms", np.array(ref["norms"], dtype=np.float32)))
    tensors += [("adamw_final." + n, to_f32(ref["final"][n])) for n in names]
    tensors.append(("adamw_final_loss", np.array([ref["final_loss"]], dtype=np.float32)))
    return tensors


def build_metadata(cfg):
    metadata = {key: repr(value) for key, value in cfg.items()}
    metadata.update({
        "format": "slimtrain gpt2 tiny reference v1",
        "generator": "scripts/make_reference.py",
        "torch_version": torch.__version__,
        "math": "all computation in float64 (initial weights rounded to float32 first); "
                "every stored tensor rounded to float32 once at the end",
        "param_order": json.dumps([n for n, _ in param_shapes(cfg)]),
        "weight_decay_applies_to": "2-D tensors: wte, wpe, attn.qkv.weight, attn.proj.weight, "
                                   "mlp.fc.weight, mlp.proj.weight",
        "grad_clip_rule": "norm = global L2 norm of all grads; scale = grad_clip / norm if "
                          "norm > grad_clip else 1",
        "adamw_update": "m=b1*m+(1-b1)*g; v=b2*v+(1-b2)*g*g; w -= lr*((m/(1-b1^t)) / "
                        "(sqrt(v/(1-b2^t))+eps) + wd*w), t=1..steps",
        "batches": "step k (0-based) uses tokens[k]: inputs tokens[k,:,:T], targets tokens[k,:,1:]; "
                   "logits/loss/grad.* use tokens[0] and the initial weights; adamw_final_loss "
                   "is the loss of tokens[steps] with the final weights",
    })
    return metadata


def compare_fp32(params64, tokens, ref64, cfg):
    """Prints how far the same computation in float32 lands from the float64 reference."""
    params32 = {n: w.to(torch.float32) for n, w in params64.items()}
    ref32 = run_reference(params32, tokens, cfg)

    def rel(a, b):  # max abs diff relative to the largest magnitude of the reference
        a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
        return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()

    def max_abs(a, b):
        a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
        return (a - b).abs().max().item()

    grad_err = max(rel(ref32["grads"][n], ref64["grads"][n]) for n in params64)
    final_err = max(max_abs(ref32["final"][n], ref64["final"][n]) for n in params64)
    print("torch float32 vs the float64 reference (what a float32 implementation should expect):")
    print(f"  logits max rel {rel(ref32['logits'], ref64['logits']):.1e}, "
          f"loss abs {max_abs(ref32['loss'], ref64['loss']):.1e}, "
          f"grads max rel (per tensor) {grad_err:.1e}")
    print(f"  adamw losses max abs {max_abs(ref32['losses'], ref64['losses']):.1e}, "
          f"grad norms max rel {rel(ref32['norms'], ref64['norms']):.1e}, "
          f"final params max abs {final_err:.1e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output file (default: {DEFAULT_OUT.relative_to(REPO_ROOT)})")
    parser.add_argument("--skip-fp32-comparison", action="store_true",
                        help="do not rerun everything in float32 to report the expected error")
    args = parser.parse_args()

    torch.set_num_threads(1)  # one thread: reproducible reduction order, and the machine is shared
    cfg = CONFIG
    params = init_params(cfg)
    tokens = make_tokens(cfg)
    check_tokens(tokens, cfg)
    check_ops_against_torch(cfg)

    ref = run_reference(params, tokens, cfg)
    check_padding_is_inert(params, tokens[0], ref["logits"], ref["loss"], cfg)
    check_finite_differences(params, tokens[0], ref["grads"], cfg)
    if ref["final"]["wte"][cfg["vocab_size"]:].abs().max() != 0:
        fail("padded rows of wte moved during AdamW")

    tensors = build_dump(params, tokens, ref, cfg)
    write_safetensors(args.out, tensors, build_metadata(cfg))
    read_back, _ = read_safetensors(args.out)
    for name, array in tensors:
        if read_back[name].dtype != array.dtype or not np.array_equal(read_back[name], array):
            fail(f"{name} does not read back from {args.out} as written")

    print(f"step-0 loss {ref['loss'].item():.9f}  (ln V = {math.log(cfg['vocab_size']):.9f})")
    for k, (loss, norm) in enumerate(zip(ref["losses"], ref["norms"])):
        clipped = "clipped" if norm > cfg["grad_clip"] else ""
        print(f"  adamw step {k + 1:2d}: loss {loss:.9f}  grad norm {norm:.6f} {clipped}")
    print(f"loss of tokens[{cfg['adamw_steps']}] after the updates: {ref['final_loss']:.9f}")
    if not args.skip_fp32_comparison:
        compare_fp32(params, tokens, ref, cfg)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes, {len(tensors)} tensors)")


if __name__ == "__main__":
    main()
