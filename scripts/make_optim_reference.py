#!/usr/bin/python3
"""Writes the PyTorch reference that the C++ Adam-mini and SlimAdam optimizers are checked against.

The tiny GPT-2 of scripts/make_reference.py (its model code, initial weights and token batches,
imported from it) trains for 10 steps with each of two optimizers, in float64:

- Adam-mini with the official v1.1.1 semantics (zyushun/Adam-mini, adam_mini/adam_mini.py), and
- SlimAdam with the official semantics and its default "Table 1" rules (dayal-kalra/low-memory-adam,
  utils/slimadam.py and layer_map.json),

both written here from OPTIMIZERS.md sections 2 and 3, independently of the C++ code. Each picks
its partition the official way, by substring rules on parameter names. Our fused tensors are
first cut into the separate tensors that the official models have, under the names those models
use, so that the official rules see what they were written for (OPTIMIZERS.md §2.3 and §3.2):

- attn.qkv.weight [3C, C] becomes three [C, C] views, q | k | v (named q_proj / k_proj / v_proj);
- wte doubles as lm_head (one tensor, one state; both rules reduce over C, so they agree);
- attn.qkv.bias stays one tensor (every bias has a full v in both methods, so cutting it would
  change nothing).

The dump holds, per optimizer: the loss and global gradient norm of every step, the weights after
the 10 steps, and the final second moment v of every tensor in the C++ partition's order
(src/optim/partition.h). The initial weights and the tokens are those of
tests/data/gpt2_tiny_reference.safetensors, which the C++ test reads them from; this script
checks first that they are bit for bit what make_reference.py generates.

Before writing, the script checks itself: the partitions the official name rules pick equal the
tables of OPTIMIZERS.md §2.3 / §3.2, the v-entry counts equal the counts computed from those
tables, padded vocabulary rows keep zero weights and zero v, weight decay and clipping both
change the result by far more than the C++ test's tolerance, and the official shrink-first weight
decay equals llm.c's w_old form up to float64 rounding (the Adam direction does not depend on w,
so (1 - lr*wd)*w - lr*u = w - lr*(u + wd*w) exactly). It also reruns everything in float32 and
prints how far that lands from the float64 reference: the error a float32 implementation should
expect.

Usage (Debian's torch; the pyenv python3 first on PATH has none):
    /usr/bin/python3 scripts/make_optim_reference.py [--out tests/data/optim_reference.safetensors]
"""
import argparse
import json
import math
import sys
from collections import namedtuple
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_reference as gpt  # noqa: E402  (the model, init, tokens and safetensors code)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "tests" / "data" / "optim_reference.safetensors"
GPT2_REFERENCE = REPO_ROOT / "tests" / "data" / "gpt2_tiny_reference.safetensors"

# The run. lr 1e-2 (ten times make_reference's) so that weight decay shrinks the decayed weights
# by ~0.9% in 10 steps; the warmup makes the learning rate differ between steps, so a C++ run that
# ignores the per-step lr fails. Clipping at 1.0 catches some steps (Adam-mini: 1, 9 and 10;
# SlimAdam: 1) and not the others.
RUN = {
    "steps": 10,
    "peak_lr": 1e-2,
    "warmup_steps": 3,         # lr of step k (0-based) = peak_lr * min(1, (k + 1) / warmup_steps)
    "beta1": 0.9,
    "beta2": 0.95,
    "eps": 1e-8,
    "weight_decay": 0.1,
    "grad_clip": 1.0,          # global L2 norm; scale = clip / norm if norm > clip (llm.c's rule)
}

# The C++ test's tolerance on the final weights of tensors whose v is all blocks (every decayed
# tensor is one; tests/test_optim_reference.cpp), kept here so the script can check that weight
# decay and clipping each move those weights by far more than it.
FINAL_WEIGHT_TOL_BLOCKED = 2e-5
OPTIMIZERS = ("adam_mini", "slim_adam")


def learning_rates(run):
    return [run["peak_lr"] * min(1.0, (k + 1) / run["warmup_steps"]) for k in range(run["steps"])]


# ---------------------------------------------------------------------------------------------
# Views: the official models' tensors, cut out of ours. A view is (our tensor, first row, end row,
# the name the official model gives it); its v entries follow in this order, which is also the
# order of the C++ partition's segments (partition.h: tensors in ParamTable order, the fused qkv's
# segments q, k, v; within a segment Element v row-major, Row v per row, Head v per head, Column v
# per column, Whole v one entry).

def views(cfg, naming):
    """naming: "adam_mini" (our names, the qkv weight cut into q_proj/k_proj/v_proj, which is what
    Adam-mini's name sets match) or "slim_adam" (the names of SlimAdam's utils/model.py GPT)."""
    C = cfg["n_embd"]
    out = []
    for name, shape in gpt.param_shapes(cfg):
        rows = shape[0]
        if name.endswith("attn.qkv.weight"):
            stem = name[: -len("qkv.weight")]
            for k, part in enumerate(("q_proj", "k_proj", "v_proj")):
                out.append((name, k * C, (k + 1) * C, official_name(stem + part + ".weight", naming)))
        else:
            out.append((name, 0, rows, official_name(name, naming)))
    return out


def official_name(name, naming):
    if naming == "adam_mini":
        return name
    # SlimAdam's GPT (utils/model.py): transformer.{wte,wpe,h.L.*,ln_f}, ln_1 / ln_2,
    # attn.{q,k,v}_proj, attn.output_proj, mlp.mlp_up, mlp.mlp_proj.
    renames = [("ln1.", "ln_1."), ("ln2.", "ln_2."), ("attn.proj.", "attn.output_proj."),
               ("mlp.fc.", "mlp.mlp_up."), ("mlp.proj.", "mlp.mlp_proj.")]
    for ours, theirs in renames:
        name = name.replace(ours, theirs)
    if name in ("wte", "wpe"):
        name += ".weight"
    if name.startswith("lnf."):
        name = "ln_f." + name[len("lnf."):]
    return "transformer." + name


# ---------------------------------------------------------------------------------------------
# Adam-mini v1.1.1 (OPTIMIZERS.md §2.1-2.2): substring rules on the lower-cased name, in order.

ADAM_MINI_BIAS_NAMES = {"bias"}
ADAM_MINI_WQK_NAMES = {"k_proj", "q_proj", "wq", "wk", "query", "key"}
ADAM_MINI_ROW_NAMES = ({"embed", "embd", "wte"} | {"lm_head", "output", "final_layer"}
                       | {"v_proj", "wv", "value"} | {"o_proj", "wo", "attn.proj"}
                       | {"feed_forward", "linear", "mlp"})


def adam_mini_block(name):
    """"element" (plain Adam), "head", "row" or "whole"."""
    name = name.lower()
    if any(s in name for s in ADAM_MINI_BIAS_NAMES):
        return "element"
    if any(s in name for s in ADAM_MINI_WQK_NAMES):
        return "head"
    if any(s in name for s in ADAM_MINI_ROW_NAMES):
        return "row"
    return "whole"


def adam_mini_decays(name):
    name = name.lower()
    return not ("norm" in name or "ln" in name or "bias" in name)


def adam_mini_step(p, g, state, block, head_numel, lr, wd, t, run, shrink_first=True):
    """One official v1.1.1 update of view p (in place) from its clipped gradient g.

    shrink_first=False applies the weight decay in llm.c's form, w -= lr*wd*w_old, after the Adam
    step, for the self-check that the two forms agree.
    """
    b1, b2, eps = run["beta1"], run["beta2"], run["eps"]
    if not state:
        state["m"] = torch.zeros_like(p)
        if block == "element":
            state["v"] = torch.zeros_like(p)
        elif block == "head":
            state["v"] = torch.zeros(p.numel() // head_numel, 1, dtype=p.dtype)
        elif block == "row":
            state["v"] = torch.zeros(p.shape[0], 1, dtype=p.dtype)
        else:
            state["v"] = torch.zeros((), dtype=p.dtype)
    decay = lr * wd * p.clone() if wd > 0 and not shrink_first else None
    bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
    if block == "element":
        state["v"].mul_(b2).addcmul_(g, g, value=1 - b2)
        if wd > 0 and shrink_first:
            p.mul_(1 - lr * wd)
        state["m"].lerp_(g, 1 - b1)
        h = (state["v"].sqrt() / math.sqrt(bc2)).add_(eps)
        p.addcdiv_(state["m"], h, value=-lr / bc1)
    else:
        if block == "head":    # head_numel consecutive elements = head_dim output rows
            mean_square = torch.mean((g * g).view(-1, head_numel), dim=1, keepdim=True)
        elif block == "row":   # mean over the fan-in axis: one v per output row
            mean_square = torch.mean(g * g, dim=1, keepdim=True)
        else:                  # the whole tensor: sum / numel
            mean_square = torch.sum(g * g) / g.numel()
        state["v"].mul_(b2).add_(mean_square, alpha=1 - b2)
        if wd > 0 and shrink_first:
            p.mul_(1 - lr * wd)
        state["m"].lerp_(g, 1 - b1)
        h = (state["v"].sqrt() / math.sqrt(bc2)).add_(eps)
        stepsize = (1 / bc1) / h
        if block == "head":
            update = (state["m"].view(-1, head_numel) * stepsize).view(p.shape)
        else:
            update = state["m"] * stepsize
        update.mul_(lr)
        p.add_(-update)
    if decay is not None:
        p.sub_(decay)


# ---------------------------------------------------------------------------------------------
# SlimAdam (OPTIMIZERS.md §3.1-3.2): layer_map.json patterns, first match in dict order, and
# DEFAULT_COMPRESSION_RULES ("Table 1"). compress dims (1,) = mean over fan_in (one v per row),
# (0,) = mean over fan_out (one v per column), None = full v.

SLIM_LAYER_MAP = {  # dict order matters: the first layer type with a substring hit wins
    "attention_query": ["q_proj", "query", "q.weight"],
    "attention_key": ["k_proj", "key", "k.weight"],
    "attention_value": ["v_proj", "value", "v.weight"],
    "attention_output": ["o_proj", "output_proj", "out_proj", "attn.c_proj"],
    "mlp_up": ["mlp_up", "c_fc", "fc1", "up_proj", "w1"],
    "mlp_gate": ["gate_proj", "mlp.gate", "w2"],
    "mlp_down": ["mlp_proj", "mlp_down", "c_proj", "fc2", "down_proj", "w3"],
    "token_embedding": ["wte", "embed", "embedding", "token_embedding"],
    "position_embedding": ["wpe", "pos_embed", "position_embedding"],
    "lm_head": ["lm_head", "output_layer", "classifier"],
    "vision_first": ["conv1", "patch_embed", "first_conv"],
    "norm": ["ln_", "norm", "layer_norm", "layernorm"],
}
SLIM_TABLE_1 = {
    "attention_query": (1,), "attention_key": (1,), "attention_value": (0,),
    "attention_output": (0,), "mlp_up": (0,), "mlp_gate": (0,), "mlp_down": (0,),
    "token_embedding": (1,), "position_embedding": (1,), "lm_head": (1,),
    "vision_first": (1,), "vision_classification": (1,), "norm": None,
}


def slim_compress_dims(name, ndim):
    """The official get_rule_for_parameter, except for biases.

    Biases keep a full v (as OPTIMIZERS.md §3.2/§4 count them): SlimAdam's GPT runs with
    bias=False, and its layer-map rules on a 1-D bias either raise ((1,) has no dim 1) or collapse
    it to one scalar ((0,)), neither of which is a rule anyone chose.
    """
    if ndim == 1 and name.endswith(".bias"):
        return None
    for layer_type, patterns in SLIM_LAYER_MAP.items():
        if any(pattern in name for pattern in patterns):
            return SLIM_TABLE_1.get(layer_type)
    return None


def slim_decays(ndim):
    return ndim >= 2


def slim_step(p, g, state, dims, lr, wd, t, run, shrink_first=True):
    """One official SlimAdamW update of view p (in place) from its clipped gradient g."""
    b1, b2, eps = run["beta1"], run["beta2"], run["eps"]

    def compress_grad_squared(x):
        return x ** 2 if dims is None else torch.mean(x * x, dim=dims, keepdim=True)

    if not state:
        state["mu"] = torch.zeros_like(p)
        state["nu"] = torch.zeros_like(compress_grad_squared(p))
    decay = lr * wd * p.clone() if wd > 0 and not shrink_first else None
    state["mu"].mul_(b1).add_(g, alpha=1 - b1)
    state["nu"].mul_(b2).add_(compress_grad_squared(g), alpha=1 - b2)
    if wd > 0 and shrink_first:
        p.mul_(1 - lr * wd)
    mu_hat = state["mu"] / (1 - b1 ** t)
    nu_hat = state["nu"] / (1 - b2 ** t)
    p.add_(-(lr * (mu_hat / (nu_hat.sqrt() + eps))))
    if decay is not None:
        p.sub_(decay)


# ---------------------------------------------------------------------------------------------
# The partition each optimizer uses, as the C++ partition describes it: per view, a block kind
# ("element", "row", "head", "column", "whole") and its v-entry count.

# One view's share of the partition: our tensor and rows [r0, r1), the official name, the block
# kind, its v entries and whether it is weight-decayed.
ViewPartition = namedtuple("ViewPartition", "tensor r0 r1 name kind v_entries decays")


def partition(optimizer, cfg):
    """[ViewPartition] in v order."""
    C, NH = cfg["n_embd"], cfg["n_head"]
    shapes = dict(gpt.param_shapes(cfg))
    result = []
    for tensor, r0, r1, name in views(cfg, optimizer):
        shape = (r1 - r0,) + tuple(shapes[tensor][1:])
        numel = int(np.prod(shape))
        if optimizer == "adam_mini":
            kind = adam_mini_block(name)
            head_numel = C * C // NH  # the official dim*dim // n_heads
            count = {"element": numel, "head": numel // head_numel, "row": shape[0],
                     "whole": 1}[kind]
            decays = adam_mini_decays(name)
        else:
            dims = slim_compress_dims(name, len(shape))
            kind = {None: "element", (1,): "row", (0,): "column"}[dims]
            count = numel if dims is None else int(np.prod([1 if d in dims else s
                                                             for d, s in enumerate(shape)]))
            decays = slim_decays(len(shape))
        result.append(ViewPartition(tensor, r0, r1, name, kind, count, decays))
    return result


# The tables of OPTIMIZERS.md §2.3 (Adam-mini) and §3.2 (SlimAdam Table 1) for our tensors, keyed
# by (our tensor's name without the layer, view); the official name rules must reproduce them.
EXPECTED_KINDS = {
    "adam_mini": {"wte": "row", "wpe": "whole", "ln1.weight": "whole", "ln1.bias": "element",
                  "attn.qkv.weight/q": "head", "attn.qkv.weight/k": "head",
                  "attn.qkv.weight/v": "row", "attn.qkv.bias": "element",
                  "attn.proj.weight": "row", "attn.proj.bias": "element",
                  "ln2.weight": "whole", "ln2.bias": "element", "mlp.fc.weight": "row",
                  "mlp.fc.bias": "element", "mlp.proj.weight": "row",
                  "mlp.proj.bias": "element", "lnf.weight": "whole", "lnf.bias": "element"},
    "slim_adam": {"wte": "row", "wpe": "row", "ln1.weight": "element", "ln1.bias": "element",
                  "attn.qkv.weight/q": "row", "attn.qkv.weight/k": "row",
                  "attn.qkv.weight/v": "column", "attn.qkv.bias": "element",
                  "attn.proj.weight": "column", "attn.proj.bias": "element",
                  "ln2.weight": "element", "ln2.bias": "element", "mlp.fc.weight": "column",
                  "mlp.fc.bias": "element", "mlp.proj.weight": "column",
                  "mlp.proj.bias": "element", "lnf.weight": "element", "lnf.bias": "element"},
}


def expected_v_count(optimizer, cfg):
    """The v-entry count from the §2.3 / §3.2 tables as formulas (as OPTIMIZERS.md §4 counts 124M)."""
    C, NH, L, Vp, T, F = (cfg["n_embd"], cfg["n_head"], cfg["n_layer"], cfg["padded_vocab_size"],
                          cfg["max_seq_len"], cfg["ffn_hidden"])
    if optimizer == "adam_mini":
        # ln1 (1 + C), qkv.w (NH + NH + C), qkv.b 3C, attn.proj (C + C), ln2 (1 + C),
        # fc (F + F), mlp.proj (C + C)
        per_layer = (1 + C) + (2 * NH + C) + 3 * C + (C + C) + (1 + C) + (F + F) + (C + C)
        return Vp + 1 + L * per_layer + (1 + C)
    # ln1 2C, qkv.w (C + C + C), qkv.b 3C, attn.proj (C + C), ln2 2C, fc (C + F), mlp.proj (F + C)
    per_layer = 2 * C + 3 * C + 3 * C + (C + C) + 2 * C + (C + F) + (F + C)
    return Vp + T + L * per_layer + 2 * C


def check_partitions(cfg):
    counts = {}
    for optimizer in OPTIMIZERS:
        parts = partition(optimizer, cfg)
        for tensor, r0, _, name, kind, _, decays in parts:
            key = tensor.split(".", 2)[2] if tensor.startswith("h.") else tensor
            if tensor.endswith("qkv.weight"):
                key += "/" + "qkv"[r0 // cfg["n_embd"]]
            if EXPECTED_KINDS[optimizer][key] != kind:
                fail(f"{optimizer}: the official rules give {name} ({tensor} rows {r0}..) "
                     f"'{kind}' blocks; OPTIMIZERS.md says '{EXPECTED_KINDS[optimizer][key]}'")
            if decays != (len(dict(gpt.param_shapes(cfg))[tensor]) == 2):
                fail(f"{optimizer}: weight decay of {name} is {decays}; the C++ decays 2-D tensors")
        counts[optimizer] = sum(p.v_entries for p in parts)
        if counts[optimizer] != expected_v_count(optimizer, cfg):
            fail(f"{optimizer}: {counts[optimizer]} v entries, the §2.3/§3.2 formula gives "
                 f"{expected_v_count(optimizer, cfg)}")
    print("v entries of the tiny model: " + ", ".join(f"{o} {counts[o]}" for o in OPTIMIZERS)
          + f" (parameters: {sum(int(np.prod(s)) for _, s in gpt.param_shapes(cfg))})")
    return counts


# ---------------------------------------------------------------------------------------------
# Training.

def train(optimizer, params, tokens, cfg, run, shrink_first=True):
    """Runs run["steps"] steps from params (not modified). Returns the final weights, the losses
    and gradient norms per step, and the final v of every tensor (1-D, in v order)."""
    params = {n: w.clone() for n, w in params.items()}
    parts = partition(optimizer, cfg)
    head_numel = cfg["n_embd"] * cfg["n_embd"] // cfg["n_head"]
    states = [{} for _ in parts]
    losses, norms = [], []
    for k, lr in enumerate(learning_rates(run)):
        _, loss, grads = gpt.loss_and_grads(params, tokens[k], cfg)
        norm = gpt.global_grad_norm(grads)
        # llm.c's rule, as our C++ clips. The official training scripts call torch's
        # clip_grad_norm_, whose scale is clip / (norm + 1e-6): 1e-6 relative on clipped steps,
        # which the scale-invariant m / sqrt(v) all but cancels.
        scale = run["grad_clip"] / norm if norm > run["grad_clip"] else 1.0
        for (tensor, r0, r1, name, kind, _, decays), state in zip(parts, states):
            p = params[tensor][r0:r1]          # a view: updates land in params[tensor]
            g = grads[tensor][r0:r1] * scale
            wd = run["weight_decay"] if decays else 0.0
            if optimizer == "adam_mini":
                adam_mini_step(p, g, state, kind, head_numel, lr, wd, k + 1, run, shrink_first)
            else:
                dims = slim_compress_dims(name, p.dim())
                slim_step(p, g, state, dims, lr, wd, k + 1, run, shrink_first)
        losses.append(loss.item())
        norms.append(norm)
    v = {}
    for (tensor, *_), state in zip(parts, states):
        v.setdefault(tensor, []).append(state["v" if optimizer == "adam_mini" else "nu"].reshape(-1))
    v = {tensor: torch.cat(pieces) for tensor, pieces in v.items()}
    return {"final": params, "losses": losses, "norms": norms, "v": v}


# ---------------------------------------------------------------------------------------------
# Self-checks. Each raises SystemExit with the failing quantity, so a bad dump is never written.

def fail(message):
    sys.exit(f"make_optim_reference.py: self-check failed: {message}")


def check_inputs_match_gpt2_reference(params, tokens, cfg):
    """The C++ test takes the initial weights and tokens from the gpt2 reference dump."""
    stored, _ = gpt.read_safetensors(GPT2_REFERENCE)
    for name, _ in gpt.param_shapes(cfg):
        if not np.array_equal(stored["param." + name], gpt.to_f32(params[name])):
            fail(f"param.{name} of {GPT2_REFERENCE.name} is not what make_reference.py generates; "
                 "regenerate that file first")
    if not np.array_equal(stored["tokens"], tokens.to(torch.int32).numpy()):
        fail(f"tokens of {GPT2_REFERENCE.name} are not what make_reference.py generates")


def max_abs_diff(a, b):
    return max((a[n] - b[n]).abs().max().item() for n in a)


def check_run(optimizer, ref, params, tokens, cfg, run):
    V = cfg["vocab_size"]
    decayed = {p.tensor for p in partition(optimizer, cfg) if p.decays}
    if ref["final"]["wte"][V:].abs().max() != 0 or ref["v"]["wte"][V:].abs().max() != 0:
        fail(f"{optimizer}: padded wte rows moved or got v")
    clipped = sum(n > run["grad_clip"] for n in ref["norms"])
    if not 0 < clipped < run["steps"]:
        fail(f"{optimizer}: {clipped} of {run['steps']} steps clipped; the dump must have both kinds")
    # llm.c's weight-decay form gives the same weights up to float64 rounding (amplified to ~1e-13
    # by 10 steps of training; a real O(lr^2*wd) difference would be ~lr^2*wd = 1e-5 per step).
    llmc = train(optimizer, params, tokens, cfg, run, shrink_first=False)
    form_diff = max_abs_diff(llmc["final"], ref["final"])
    if form_diff > 1e-10:
        fail(f"{optimizer}: shrink-first and w_old weight decay differ by {form_diff:.1e}")

    # Weight decay and clipping each move the decayed (blocked) weights far beyond the tolerance.
    def effect(changed):
        other = train(optimizer, params, tokens, cfg, dict(run, **changed))
        return min((other["final"][n] - ref["final"][n]).abs().max().item()
                   for n in decayed)

    no_decay, no_clip = effect({"weight_decay": 0.0}), effect({"grad_clip": math.inf})
    print(f"  {optimizer}: {clipped} of {run['steps']} steps clipped; smallest per-tensor max "
          f"change of a decayed tensor without weight decay {no_decay:.1e}, without clipping "
          f"{no_clip:.1e} (test tolerance {FINAL_WEIGHT_TOL_BLOCKED:.0e}); shrink-first vs w_old "
          f"weight decay {form_diff:.1e}")
    for what, size in (("weight decay", no_decay), ("clipping", no_clip)):
        if size < 5 * FINAL_WEIGHT_TOL_BLOCKED:
            fail(f"{optimizer}: {what} changes some decayed tensor by only {size:.1e}")


def compare_fp32(params64, tokens, refs, cfg, run):
    """Prints how far the same runs in float32 land from the float64 reference."""
    params32 = {n: w.to(torch.float32) for n, w in params64.items()}
    print("torch float32 vs the float64 reference (what a float32 implementation should expect):")
    for optimizer in OPTIMIZERS:
        ref, got = refs[optimizer], train(optimizer, params32, tokens, cfg, run)
        element = {p.tensor for p in partition(optimizer, cfg) if p.kind == "element"}
        blocked = [n for n in ref["final"] if n not in element]

        def worst(names):
            return max((got["final"][n].double() - ref["final"][n]).abs().max().item() for n in names)

        v_rel = max(((got["v"][n].double() - ref["v"][n]).abs().max()
                     / ref["v"][n].abs().max()).item() for n in ref["v"])
        loss_diff = max(abs(a - b) for a, b in zip(got["losses"], ref["losses"]))
        print(f"  {optimizer}: losses max abs {loss_diff:.1e}; final weights max abs: blocked v "
              f"{worst(blocked):.1e}, per-element v {worst(element):.1e}; v max rel (per tensor) "
              f"{v_rel:.1e}")


# ---------------------------------------------------------------------------------------------
# The dump.

def build_dump(refs, cfg, run):
    names = [n for n, _ in gpt.param_shapes(cfg)]
    tensors = [("lrs", np.array(learning_rates(run), dtype=np.float32))]
    for optimizer in OPTIMIZERS:
        ref = refs[optimizer]
        tensors.append((f"{optimizer}.losses", np.array(ref["losses"], dtype=np.float32)))
        tensors.append((f"{optimizer}.grad_norms", np.array(ref["norms"], dtype=np.float32)))
        tensors += [(f"{optimizer}.final.{n}", gpt.to_f32(ref["final"][n])) for n in names]
        tensors += [(f"{optimizer}.v.{n}", gpt.to_f32(ref["v"][n])) for n in names]
    return tensors


def build_metadata(cfg, run, counts):
    metadata = {key: repr(value) for key, value in run.items()}
    # The model, init and data of make_reference.py; its AdamW run's settings do not apply here.
    adamw_only = ("adamw_steps", "lr", "weight_decay", "grad_clip", "beta1", "beta2", "adam_eps")
    metadata.update({"model." + key: repr(value) for key, value in cfg.items()
                     if key not in adamw_only})
    partitions = {}
    for optimizer in OPTIMIZERS:
        partitions[optimizer] = [
            {"tensor": p.tensor, "rows": [p.r0, p.r1], "official_name": p.name, "blocks": p.kind,
             "v_entries": p.v_entries} for p in partition(optimizer, cfg)]
    metadata.update({
        "format": "slimtrain optimizer reference v1",
        "generator": "scripts/make_optim_reference.py",
        "torch_version": torch.__version__,
        "inputs": "initial weights param.* and tokens of tests/data/gpt2_tiny_reference.safetensors; "
                  "step k (0-based) uses tokens[k] and learning rate lrs[k]",
        "math": "float64 throughout; every stored tensor rounded to float32 once at the end",
        "param_order": json.dumps([n for n, _ in gpt.param_shapes(cfg)]),
        "v_entries": json.dumps(counts),
        "partitions": json.dumps(partitions),
        "v_order": "per tensor in param_order; the fused qkv weight's views q, k, v in turn; within a "
                   "view: element = row-major, row = per row, head = per head, column = per column, "
                   "whole = one entry",
        "weight_decay_rule": "Adam-mini: names without norm/ln/bias (= the 2-D tensors here); SlimAdam: "
                        "ndim >= 2; official shrink-first form w *= 1 - lr*wd, then the Adam step",
        "grad_clip_rule": "norm = global L2 norm of all grads; scale = grad_clip / norm if norm > "
                          "grad_clip else 1; v is updated from the clipped gradient",
    })
    return metadata


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output file (default: {DEFAULT_OUT.relative_to(REPO_ROOT)})")
    parser.add_argument("--skip-fp32-comparison", action="store_true",
                        help="do not rerun everything in float32 to report the expected error")
    args = parser.parse_args()

    torch.set_num_threads(1)  # one thread: reproducible reduction order, and the machine is shared
    cfg, run = gpt.CONFIG, RUN
    if cfg["adamw_steps"] < run["steps"]:
        fail(f"make_reference.py generates {cfg['adamw_steps']} batches; {run['steps']} are needed")
    if cfg["padded_vocab_size"] <= cfg["vocab_size"]:
        fail("the vocabulary must be padded so that padded rows are exercised")
    params = gpt.init_params(cfg)
    tokens = gpt.make_tokens(cfg)
    check_inputs_match_gpt2_reference(params, tokens, cfg)
    counts = check_partitions(cfg)

    refs = {optimizer: train(optimizer, params, tokens, cfg, run) for optimizer in OPTIMIZERS}
    print("self-checks:")
    for optimizer in OPTIMIZERS:
        check_run(optimizer, refs[optimizer], params, tokens, cfg, run)

    tensors = build_dump(refs, cfg, run)
    gpt.write_safetensors(args.out, tensors, build_metadata(cfg, run, counts))
    size = args.out.stat().st_size
    if size >= 1 << 20:  # it is committed: keep it small
        args.out.unlink()
        fail(f"the dump would be {size} bytes; keep it under 1 MiB")
    read_back, _ = gpt.read_safetensors(args.out)
    for name, array in tensors:
        if read_back[name].dtype != array.dtype or not np.array_equal(read_back[name], array):
            fail(f"{name} does not read back from {args.out} as written")

    lrs = learning_rates(run)
    for optimizer in OPTIMIZERS:
        print(f"{optimizer}:")
        for k, (loss, norm) in enumerate(zip(refs[optimizer]["losses"], refs[optimizer]["norms"])):
            clipped = "clipped" if norm > run["grad_clip"] else ""
            print(f"  step {k + 1:2d}: lr {lrs[k]:.6f}  loss {loss:.9f}  grad norm {norm:.6f} {clipped}")
    if not args.skip_fp32_comparison:
        compare_fp32(params, tokens, refs, cfg, run)
    print(f"wrote {args.out} ({size} bytes, {len(tensors)} tensors)")


if __name__ == "__main__":
    main()
