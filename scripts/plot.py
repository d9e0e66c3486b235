#!/usr/bin/python3
"""Draws the loss curves of one or more slimtrain runs into a PNG.

    scripts/plot.py runs/tiny runs/other/metrics.jsonl --out losses.png [--smooth 20] [--log-x]

Each argument is a run's out_dir or its metrics.jsonl. Train loss is drawn thin (and an
exponential moving average of it, when --smooth > 1), val loss as markers, one colour per run.
Needs Debian's python3-matplotlib (installed by scripts/setup.sh); uses the Agg backend, so no
display is needed.
"""
import argparse
import json
import os
import sys


def read_metrics(path):
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.jsonl")
    train, val = [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"plot.py: {path}:{number}: not JSON ({e})")
            if "train_loss" in record:
                train.append((record["step"], record["train_loss"]))
            if "val_loss" in record:
                val.append((record["step"], record["val_loss"]))
    if not train and not val:
        sys.exit(f"plot.py: {path} holds no train_loss or val_loss records")
    return path, train, val


def ema(values, span):
    alpha, out, current = 2.0 / (span + 1.0), [], None
    for v in values:
        current = v if current is None else alpha * v + (1 - alpha) * current
        out.append(current)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run out_dir or metrics.jsonl")
    parser.add_argument("--out", default="losses.png", help="output PNG (default losses.png)")
    parser.add_argument("--smooth", type=int, default=0, help="EMA span for the train loss")
    parser.add_argument("--log-x", action="store_true", help="logarithmic step axis")
    parser.add_argument("--title", default="slimtrain loss curves")
    args = parser.parse_args()

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=120)
    for index, run in enumerate(args.runs):
        path, train, val = read_metrics(run)
        label = os.path.basename(os.path.dirname(os.path.abspath(path))) or path
        color = f"C{index % 10}"
        if train:
            steps, losses = zip(*train)
            if args.smooth > 1:
                ax.plot(steps, losses, color=color, alpha=0.25, linewidth=0.8)
                ax.plot(steps, ema(losses, args.smooth), color=color, linewidth=1.6,
                        label=f"{label} train (EMA {args.smooth})")
            else:
                ax.plot(steps, losses, color=color, linewidth=1.2, label=f"{label} train")
        if val:
            steps, losses = zip(*val)
            ax.plot(steps, losses, color=color, marker="o", linestyle="--", linewidth=1.0,
                    label=f"{label} val")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(args.title)
    if args.log_x:
        ax.set_xscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"plot.py: wrote {args.out}")


if __name__ == "__main__":
    main()
