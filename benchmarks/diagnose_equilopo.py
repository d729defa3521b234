"""Why a small EquiLoPO stays at chance on `shapes` (issue 16): measurements, not training.

Two parts, one JSON (benchmarks/results/equilopo_diagnosis.json) and one figure:

* ``probe``: one forward pass of a freshly initialised model over N train and N val volumes of
  `shapes`; the rotation-invariant numbers each head candidate would hand the classifier are
  collected, and a linear classifier is fitted on them in two ways: (a) the way the training
  loop does it (Adam, lr, the given number of steps, raw features) and (b) to convergence on
  standardised features (L-BFGS logistic regression): the ceiling of that head at init.
  Also recorded: the spread of each invariant over the samples (std/|mean|), the share of
  the spatial mean that comes from background voxels, and per-layer activation statistics.
* ``steps``: a few Adam steps of the whole model (paper head) with per-layer gradient norms
  and relative update sizes ‖Δw‖/‖w‖.

    OMP_NUM_THREADS=1 python benchmarks/diagnose_equilopo.py --size 16 --samples 256 \
        --channels 4 --blocks 1 --steps 8 --batch 8

One thread by default (the machine is shared); the figures are measurements on this machine.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's volrot

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from volrot.data.synthetic import generate_split  # noqa: E402
from volrot.models import create_model  # noqa: E402
from volrot.models.equilopo import invariants as inv_mod  # noqa: E402
from volrot.so3.wigner import degree_weights  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
IMG = Path(__file__).resolve().parents[1] / "docs" / "img"


def _lmax_of(n: int) -> int:
    return {1: 0, 10: 1, 35: 2, 84: 3, 165: 4}[n]


def layer_stats(out: torch.Tensor) -> dict:
    """l=0 mean and RMS, RMS of the l≥1 part (mean_Q over the non-constant part) of a field."""
    o = out.detach().float()
    w = degree_weights(_lmax_of(o.shape[2])).view(1, 1, -1, 1, 1, 1)
    return {
        "shape": list(o.shape),
        "l0_mean": float(o[:, :, 0].mean()),
        "l0_rms": float(o[:, :, 0].square().mean().sqrt()),
        "sigma_rms": float((o[:, :, 1:].square() * w[:, :, 1:]).sum(2).mean().sqrt()),
    }


def head_candidates(model, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict]:
    """Pooled invariants per head candidate for a batch, plus per-layer stats and bg share."""
    stats = {}
    hooks = []
    for name, mod in model.named_modules():
        if name and name.count(".") <= 1 and not name.endswith(("op", "weights", "drop1", "drop2", "pool")):
            hooks.append(mod.register_forward_hook(lambda m, i, o, n=name: stats.__setitem__(n, layer_stats(o)) if o.dim() == 6 else None))
    with torch.no_grad():
        feats = model.features(x)
        soft = model.softmax(feats)  # (B, C, D, H, W)
    for h in hooks:
        h.remove()
    lmax = _lmax_of(feats.shape[2])
    fg = (x[:, 0] > 0.2).unsqueeze(1).float()  # piece voxels (the volumes are ~0 elsewhere)
    share_bg = float((soft * (1 - fg)).sum() / soft.sum())
    out = {
        "softmax_mean": soft.mean((2, 3, 4)),
        "softmax_mean_max": torch.cat([soft.mean((2, 3, 4)), soft.amax((2, 3, 4))], 1),
        "spectrum": inv_mod.power_spectrum(feats, lmax).mean((3, 4, 5)).flatten(1),
        "gram": inv_mod.row_gram(feats, lmax).mean((3, 4, 5)).flatten(1),
    }
    out["spectrum+softmax"] = torch.cat([out["spectrum"], out["softmax_mean"]], 1)
    return out, {"layers": stats, "softmax_background_share": share_bg, "foreground_fraction": float(fg.mean())}


def activation_regimes(model, x: torch.Tensor) -> dict:
    """Per local activation: share of (sample, channel, voxel) functions in each regime of the
    adaptive coefficients (all-negative: P = 0.01·y, all-positive: P = y, mixed: Eq. 15 fit),
    and for the head's SoftMax the share where the floor 0.01·rms(f) replaces |p⁰|."""
    from volrot.models.equilopo.activation import SOFTMAX_FLOOR, LocalActivation, SO3SoftMax

    out, hooks = {}, []

    def local_hook(name):
        def h(mod, inp, _):
            f = inp[0].detach().float()
            w = degree_weights(mod.lmax).view(1, 1, -1, *([1] * (f.dim() - 3)))
            mu, three_sigma = f[:, :, 0], 3 * (f[:, :, 1:].square() * w[:, :, 1:]).sum(2).sqrt()
            neg, pos = (mu + three_sigma <= 0), (mu - three_sigma >= 0)
            out[name] = {"negative": float(neg.float().mean()), "positive": float(pos.float().mean()), "mixed": float((~neg & ~pos).float().mean())}
        return h

    def softmax_hook(name):
        def h(mod, inp, _):
            f = inp[0].detach().float()
            p = mod.activation(f)
            rms = (f.square() * degree_weights(mod.activation.lmax).view(1, 1, -1, 1, 1, 1)).sum(2).sqrt()
            out[name + " (floor active)"] = {"share": float((p[:, :, 0].abs() < SOFTMAX_FLOOR * rms).float().mean())}
        return h

    for name, mod in model.named_modules():
        if isinstance(mod, SO3SoftMax):
            hooks.append(mod.register_forward_hook(softmax_hook(name)))
        elif isinstance(mod, LocalActivation) and mod.coefficients == "adaptive" and ".softmax" not in name and not name.startswith("softmax"):
            hooks.append(mod.register_forward_hook(local_hook(name)))
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return out


def fit_adam(xtr, ytr, xva, yva, classes, lr, steps, batch, seed=0):
    """The training loop's view: Linear head on raw pooled invariants, Adam."""
    g = torch.Generator().manual_seed(seed)
    fc = torch.nn.Linear(xtr.shape[1], classes)
    opt = torch.optim.Adam(fc.parameters(), lr)
    for _ in range(steps):
        idx = torch.randint(0, len(xtr), (batch,), generator=g)
        loss = F.cross_entropy(fc(xtr[idx]), ytr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(F.cross_entropy(fc(xtr), ytr)), float((fc(xva).argmax(1) == yva).float().mean())


def fit_ceiling(xtr, ytr, xva, yva, classes, l2=1e-3):
    """Logistic regression to convergence on standardised invariants (L-BFGS)."""
    mu, sd = xtr.mean(0), xtr.std(0).clamp_min(1e-12)
    a, b = (xtr - mu) / sd, (xva - mu) / sd
    fc = torch.nn.Linear(a.shape[1], classes).double()
    a, b = a.double(), b.double()
    opt = torch.optim.LBFGS(fc.parameters(), max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(fc(a), ytr) + l2 * fc.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(F.cross_entropy(fc(a), ytr)), float((fc(b).argmax(1) == yva).float().mean())


def probe(args) -> dict:
    torch.manual_seed(args.seed)
    model = create_model("equilopo", num_classes=8, blocks=args.blocks, channels=args.channels, **args.model)
    model.train()  # batch statistics, as in the first training steps
    data = {}
    meta = {}
    for split in ("train", "val"):
        x, y = generate_split(split, size=args.size, n=args.samples)
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        parts = []
        for i in range(0, len(x), args.batch):
            feats, info = head_candidates(model, x[i : i + args.batch])
            parts.append(feats)
            if split == "train" and i == 0:
                meta = info
        data[split] = ({k: torch.cat([p[k] for p in parts]) for k in parts[0]}, y)
    meta["activation_regimes"] = activation_regimes(model, torch.from_numpy(generate_split("train", size=args.size, n=args.batch)[0]))
    (ftr, ytr), (fva, yva) = data["train"], data["val"]
    heads = {}
    for name in ftr:
        a, b = ftr[name], fva[name]
        spread = (a.std(0) / a.mean(0).abs().clamp_min(1e-12)).tolist()
        # how much of the invariants' variance lies along their first principal direction
        centred = a - a.mean(0)
        sv = torch.linalg.svdvals(centred / centred.std(0).clamp_min(1e-12)) ** 2
        adam_loss, adam_acc = fit_adam(a, ytr, b, yva, 8, args.lr, args.probe_steps, args.probe_batch)
        ceil_loss, ceil_acc = fit_ceiling(a, ytr, b, yva, 8)
        heads[name] = {
            "features": a.shape[1],
            "spread_std_over_mean": spread,
            "first_pc_share": float(sv[0] / sv.sum()),
            "adam_raw": {"lr": args.lr, "steps": args.probe_steps, "train_loss": adam_loss, "val_acc": adam_acc},
            "ceiling_standardised": {"train_loss": ceil_loss, "val_acc": ceil_acc},
        }
        print(f"{name:18s} n={a.shape[1]:3d} spread {np.median(spread):.3f} pc1 {heads[name]['first_pc_share']:.2f}"
              f"  adam({args.probe_steps} steps) val acc {adam_acc:.3f} loss {adam_loss:.3f}"
              f"  ceiling val acc {ceil_acc:.3f}", flush=True)
    return {"heads": heads, **meta}


def steps(args) -> list[dict]:
    torch.manual_seed(args.seed)
    model = create_model("equilopo", num_classes=8, blocks=args.blocks, channels=args.channels, **args.model)
    x, y = generate_split("train", size=args.size, n=args.samples)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), args.lr)
    g = torch.Generator().manual_seed(args.seed)
    groups = {}
    for name, p in model.named_parameters():
        group = name.split(".weights.", 1)[0] if ".weights." in name else name.rsplit(".", 1)[0]
        groups.setdefault(group, []).append((name, p))
    log = []
    for step in range(args.steps):
        idx = torch.randint(0, len(x), (args.batch,), generator=g)
        model.train()
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        loss = loss.detach()
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        opt.step()
        rec = {"step": step, "loss": float(loss), "layers": {}}
        for gname, ps in groups.items():
            w = math.sqrt(sum(float(before[n].square().sum()) for n, _ in ps))
            gn = math.sqrt(sum(float(p.grad.square().sum()) for _, p in ps))
            dw = math.sqrt(sum(float((p.detach() - before[n]).square().sum()) for n, p in ps))
            numel = sum(p.numel() for _, p in ps)
            rec["layers"][gname] = {"grad_norm": gn, "weight_rms": w / math.sqrt(numel), "rel_update": dw / max(w, 1e-12)}
        log.append(rec)
        print(f"step {step} loss {float(loss):.4f}  " + "  ".join(f"{k}:{v['rel_update']:.1e}" for k, v in rec["layers"].items() if k in ("lift", "conv0", "fc")), flush=True)
    return log


INVARIANCE_VARIANTS = {
    "paper head (1 block)": {"blocks": 1},
    "spectrum head": {"blocks": 1, "head": "spectrum"},
    "gram head + head_norm": {"blocks": 1, "head": "gram", "head_norm": True},
    "equilopo_shapes recipe": {"blocks": 2, "head": "gram", "head_norm": True, "lift_lmax": 1, "init_pool": True},
}


def invariance(args) -> dict:
    """Max over the 24 grid rotations of max|Δlogit| / max|logit| (float32), per variant and
    mode, on `shapes` volumes; eval mode after 3 batches of running statistics."""
    from volrot.so3.groups import octahedral, rotate_exact

    x = torch.from_numpy(generate_split("val", size=args.size, n=args.batch)[0])
    calib = torch.from_numpy(generate_split("train", size=args.size, n=3 * args.batch)[0])
    out = {}
    for name, opts in INVARIANCE_VARIANTS.items():
        torch.manual_seed(args.seed)
        model = create_model("equilopo", num_classes=8, channels=args.channels, **opts)
        for mode in ("train", "eval"):
            if mode == "eval":
                model.train()
                with torch.no_grad():
                    for i in range(3):
                        model(calib[i * args.batch : (i + 1) * args.batch])
            model.train(mode == "train")
            with torch.no_grad():
                ref = model(x)
                err = max(float((model(rotate_exact(x, g)) - ref).abs().max() / ref.abs().max()) for g in octahedral())
            out[f"{name} / {mode}"] = err
            print(f"{name:28s} {mode:5s} relative logit error {err:.1e}", flush=True)
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    heads = result["probe"]["heads"]
    names = list(heads)
    xs = np.arange(len(names))
    ax = axes[0]
    ax.bar(xs - 0.2, [heads[n]["adam_raw"]["val_acc"] for n in names], 0.4, label=f"Adam lr {result['args']['lr']:g}, {result['args']['probe_steps']} steps, raw")
    ax.bar(xs + 0.2, [heads[n]["ceiling_standardised"]["val_acc"] for n in names], 0.4, label="converged, standardised")
    ax.axhline(1 / 8, color="k", lw=0.8, ls="--")
    ax.set_xticks(xs, [f"{n.replace('_', ' ').replace('+', '+ ')}\n({heads[n]['features']} numbers)".replace(" ", "\n", 1) for n in names], fontsize=7)
    ax.set_ylabel("val ACC of a linear head on frozen init features")
    ax.set_title("What each invariant head can tell apart at init", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[1]
    log = result["steps"]
    if log:
        layers = list(log[0]["layers"])
        for name in layers:
            ax.semilogy([r["step"] for r in log], [r["layers"][name]["rel_update"] for r in log], label=name)
        ax.set_xlabel("step")
        ax.set_ylabel("‖Δw‖/‖w‖ per Adam step")
        ax.set_title(f"Relative update size (lr {result['args']['lr']:g})", fontsize=9)
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--channels", type=int, default=4)
    ap.add_argument("--blocks", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--probe-steps", type=int, default=64)
    ap.add_argument("--probe-batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], help="model option KEY=VALUE (e.g. head=spectrum)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--invariance", action="store_true", help="only measure the grid invariance of the head variants (merged into --out)")
    ap.add_argument("--out", type=Path, default=RESULTS / "equilopo_diagnosis.json")
    ap.add_argument("--figure", type=Path, default=IMG / "equilopo_diagnosis.png")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.model = {}
    for kv in args.set:
        k, v = kv.split("=", 1)
        args.model[k] = int(v) if v.lstrip("-").isdigit() else v
    if args.invariance:
        doc = json.loads(args.out.read_text(encoding="utf-8")) if args.out.is_file() else {}
        doc["invariance_24_grid_rotations"] = {"size": args.size, "batch": args.batch, "errors": invariance(args)}
        args.out.write_text(json.dumps(doc, indent=2, default=str), encoding="utf-8")
        return
    t0 = time.perf_counter()
    result = {
        "args": {k: v for k, v in vars(args).items() if k not in ("out", "figure")},
        "machine": platform.processor() or platform.machine(),
        "probe": probe(args),
        "steps": steps(args) if args.steps else [],
    }
    result["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    plot(result, args.figure)
    print(f"wrote {args.out} and {args.figure}")


if __name__ == "__main__":
    main()
