#!/usr/bin/python3
"""The floor a GPU run is held against: FLOPs and bytes moved per training step by each kernel of
slimtrain's CUDA backend, computed from the shapes (not measured), for a GPT-2 config.

    bench/kernel_floor.py [--config configs/gpt2_124m.json] [--B 8] [--T 1024] [--optimizer adamw]

Counts one micro-batch's forward and backward (the kernels in the order gpt.cpp calls them,
summed over layers) plus one optimizer step. Bytes are the minimum each kernel must read and
write once (bf16 activations/weights/gradients, fp32 LayerNorm statistics, attention
log-sum-exp, optimizer state and master weights); a kernel that re-reads an input from DRAM moves
more. FLOPs count a multiply-add as 2; elementwise work is counted per element at a nominal
cost. The last columns are the time floors on an H100 SXM (989 TFLOP/s dense bf16,
3.35 TB/s HBM3): whichever is larger bounds the kernel from below.
"""
import argparse
import json
import os

X = 2       # bf16 bytes
F32 = 4


def load_model(path):
    with open(path, encoding="utf-8") as f:
        model = json.load(f)["model"]
    return {
        "L": model["n_layer"], "NH": model["n_head"], "C": model["n_embd"],
        "V": model["vocab_size"], "Vp": model.get("padded_vocab_size", model["vocab_size"]),
        "maxT": model["max_seq_len"], "F": model.get("ffn_hidden", 4 * model["n_embd"]),
    }


def kernels(m, B, T, optimizer):
    L, NH, C, Vp, F = m["L"], m["NH"], m["C"], m["Vp"], m["F"]
    HS, N = C // NH, B * T
    rows = []  # (name, calls per step, flops per call, bytes per call)

    def add(name, calls, flops, nbytes):
        rows.append((name, calls, flops, nbytes))

    def matmul(name, calls, n, c, oc, bias=True, gelu=False):
        fwd_bytes = (n * c + oc * c + n * oc * (2 if gelu else 1)) * X + (oc * X if bias else 0)
        add(f"matmul fwd {name}", calls, 2 * n * c * oc + (8 * n * oc if gelu else 0), fwd_bytes)
        # dinp = dout @ W (+ dGELU epilogue reading pre-activations), dW = dout^T @ inp, dbias.
        bwd_bytes = (n * oc + oc * c + n * c) * X + (n * c * X if gelu else 0)
        bwd_bytes += (n * oc + n * c + oc * c) * X + (oc * X if bias else 0)
        add(f"matmul bwd {name}", calls, 4 * n * c * oc + (n * oc if bias else 0), bwd_bytes)

    # Forward.
    add("encoder fwd", 1, N * C, N * 4 + (N * C + T * C + N * C) * X)
    add("layernorm fwd (ln1 of layer 0)", 1, 8 * N * C, 2 * N * C * X + 2 * C * X + 2 * N * F32)
    add("fused residual+layernorm fwd", 2 * L, 9 * N * C, 4 * N * C * X + 2 * C * X + 2 * N * F32)
    matmul("qkv", L, N, C, 3 * C)
    # Causal: half of the T x T scores. QK^T and PV, plus the online softmax (~5 per score).
    scores = B * NH * T * (T + 1) // 2
    add("attention fwd (flash, causal)", L, 4 * scores * HS + 5 * scores,
        N * 3 * C * X + N * C * X + B * NH * T * F32)
    matmul("attn proj", L, N, C, C)
    matmul("fc + GELU", L, N, C, F, gelu=True)
    matmul("fc proj", L, N, F, C)
    add("matmul fwd lm_head (tied wte)", 1, 2 * N * C * Vp, (N * C + Vp * C + N * Vp) * X)
    add("fused classifier (softmax, loss, dlogits)", 1, 6 * N * Vp, 2 * N * Vp * X + N * 4 + N * F32)
    # Backward.
    add("matmul bwd lm_head (dlnf, dwte)", 1, 4 * N * C * Vp,
        (N * Vp + Vp * C + N * C) * X + (N * Vp + N * C + Vp * C) * X)
    add("layernorm bwd", 2 * L + 1, 14 * N * C,
        (N * C * 3 + N * C * 2) * X + 2 * N * F32 + 2 * C * X * 2)
    # Recomputes S and P, then dV, dP, dS, dQ, dK: 5 matmul-sized passes over the causal scores.
    add("attention bwd (dq + dkdv, causal)", L, 10 * scores * HS + 8 * scores,
        (N * 3 * C + N * C * 2) * X + B * NH * T * F32 + N * 3 * C * X)
    add("encoder bwd (dwte rows, dwpe)", 1, 2 * N * C, N * 4 + N * C * X + 2 * N * C * X + T * C * X)
    # Optimizer.
    P = sum_params(m)
    add("global grad norm", 1, 2 * P, P * X)
    if optimizer == "adamw":
        # grad (bf16) + m, v, master (fp32) read; m, v, master (fp32) + param (bf16) written.
        add("adamw update (fp32 master, SR to bf16)", 1, 20 * P, P * (X + 3 * F32 + 3 * F32 + X))
    else:
        # block reductions read the gradient once more; v is per block (negligible).
        add(f"{optimizer} reduce g^2 per block", 1, 3 * P, P * X)
        add(f"{optimizer} update (fp32 master, SR to bf16)", 1, 16 * P,
            P * (X + 2 * F32 + 2 * F32 + X))
    return rows, P


def sum_params(m):
    L, C, Vp, F, T = m["L"], m["C"], m["Vp"], m["F"], m["maxT"]
    per_layer = 2 * C + 3 * C * C + 3 * C + C * C + C + 2 * C + F * C + F + C * F + C
    return Vp * C + T * C + L * per_layer + 2 * C


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=os.path.join(here, "..", "configs", "gpt2_124m.json"))
    parser.add_argument("--B", type=int, default=8)
    parser.add_argument("--T", type=int, default=1024)
    parser.add_argument("--optimizer", default="adamw", choices=["adamw", "adam_mini", "slim_adam"])
    args = parser.parse_args()
    m = load_model(args.config)
    rows, P = kernels(m, args.B, args.T, args.optimizer)
    peak_flops, peak_bytes = 989e12, 3.35e12
    print(f"{os.path.basename(args.config)}: {P:,} parameters, B={args.B} T={args.T}, "
          f"optimizer {args.optimizer}; per step, summed over calls")
    print(f"{'kernel':<44} {'calls':>5} {'GFLOP':>10} {'MB moved':>10} {'FLOP/B':>7} "
          f"{'us (flops)':>11} {'us (bytes)':>11}")
    total_f = total_b = total_t = 0.0
    for name, calls, flops, nbytes in rows:
        f, b = calls * flops, calls * nbytes
        tf, tb = f / peak_flops * 1e6, b / peak_bytes * 1e6
        total_f, total_b, total_t = total_f + f, total_b + b, total_t + max(tf, tb)
        print(f"{name:<44} {calls:>5} {f / 1e9:>10.2f} {b / 1e6:>10.1f} {f / b:>7.0f} "
              f"{tf:>11.1f} {tb:>11.1f}")
    print(f"{'total':<44} {'':>5} {total_f / 1e9:>10.2f} {total_b / 1e6:>10.1f} "
          f"{total_f / total_b:>7.0f}   floor {total_t / 1e3:.2f} ms/step "
          f"({args.B * args.T / (total_t / 1e6):,.0f} tokens/s at 100% of both peaks)")
    print(f"model FLOPs 6*P*tokens = {6 * P * args.B * args.T / 1e9:.1f} GFLOP "
          f"(+ attention {12 * m['L'] * m['C'] * args.T * args.B * args.T / 2 / 1e9:.1f})")


if __name__ == "__main__":
    main()
