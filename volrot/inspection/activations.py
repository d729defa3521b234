"""What EquiLoPO's SO(3) nonlinearities do, measured with forward hooks (the model is unchanged).

Per **local activation** (`LocalActivation`, docs/equilopo-math.md §1.4) the hook sees the input
coefficients f `(B, C, N_L, D, H, W)` and the output coefficients σ(f) `(B, C, N_keep, ...)`.

* Over *all* functions (every sample, channel and voxel): μ = f⁰ (the SO(3) mean) and
  σ = √(Σ_{l≥1} ‖f^l‖²/(2l+1)) (the SO(3) standard deviation), and the regime of the adaptive
  coefficients: all-negative (μ + 3σ ≤ 0), all-positive (μ − 3σ ≥ 0), mixed (otherwise). The
  regimes are the adaptive rule's; for constant/trainable coefficients they describe the input
  distribution only.
* For `functions` randomly drawn functions (seeded): their values at the given rotations Q_k,
  input f(Q_k) and output σ(f)(Q_k) (Wigner evaluation of the coefficients the layer received
  and returned, `volrot.so3.wigner.wigner_blocks`), plus the exact polynomial n·P(f(Q_k)/n)
  from the layer's own normaliser and coefficients (`LocalActivation.polynomial`). When the layer
  keeps fewer degrees than 2L (`keep`), output − polynomial is the truncation error.

Per **SO(3) SoftMax** (`SO3SoftMax`, §1.5): the invariant value per function and the sampled
maximum max_k f(Q_k) of the same function. Per **global activation** (`GlobalActivation`, §1.6):
the gate per function, ⟨out, in⟩ / ⟨in, in⟩ (the output is the input times a scalar gate).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from volrot.so3.wigner import mean_square, n_coeffs, wigner_blocks

#: μ/σ pairs kept per layer for the distribution (a seeded random subset of all functions)
MOMENT_SUBSET = 20000


class SamplingRows:
    """Wigner sampling rows D^l(Q_k)_ba of fixed rotations, computed once for the highest degree
    asked and sliced for lower ones (the flat coefficient axis is ordered by degree)."""

    def __init__(self, rotations):
        self.rotations = torch.as_tensor(np.asarray(rotations), dtype=torch.float64)
        self._rows, self._lmax = None, -1

    def __call__(self, lmax: int) -> torch.Tensor:
        """(K, N_lmax) float64: f(Q_k) = rows @ coefficients."""
        if lmax > self._lmax:
            self._rows, self._lmax = wigner_blocks(lmax, self.rotations), lmax
        return self._rows[:, : n_coeffs(lmax)]


def _rows(rotations) -> SamplingRows:
    return rotations if isinstance(rotations, SamplingRows) else SamplingRows(rotations)


def _pick(total: int, k: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randperm(total, generator=gen)[: min(k, total)]


def _flat_functions(x: torch.Tensor) -> torch.Tensor:
    """(B, C, N, D, H, W) -> (B·C·D·H·W, N): one row per SO(3) function, in (b, c, d, h, w) order."""
    return x.movedim(2, -1).reshape(-1, x.shape[2])


def _unravel(idx: torch.Tensor, shape) -> np.ndarray:
    return np.stack(np.unravel_index(idx.numpy(), tuple(shape)), axis=1)


@dataclass
class LocalActivationSamples:
    """Collected by `LocalActivationProbe`; `finish(rotations)` fills the value arrays.

    `index` (F, 5): (sample, channel, x, y, z) of each drawn function (sample = position in the
    inspected batch sequence). `input_values`, `output_values`, `polynomial_values` (F, K) float64
    at `rotations` (K, 3, 3). `mu`, `sigma`: a random subset of all functions' moments.
    `regimes`: counts over all functions.
    """

    name: str
    coefficients: str
    lmax: int
    keep: int
    index: np.ndarray = None
    input_coeffs: torch.Tensor = None
    output_coeffs: torch.Tensor = None
    n: torch.Tensor = None
    c: torch.Tensor = None  # (F, 3): c0, c1, c2 per function
    mu: np.ndarray = None
    sigma: np.ndarray = None
    regimes: dict = field(default_factory=lambda: {"all_negative": 0, "all_positive": 0, "mixed": 0})
    rotations: np.ndarray = None
    input_values: np.ndarray = None
    output_values: np.ndarray = None
    polynomial_values: np.ndarray = None

    def finish(self, rotations) -> None:
        """Evaluate at `rotations` ((K, 3, 3) or a shared `SamplingRows`)."""
        rows = _rows(rotations)
        self.rotations = rows.rotations.numpy()
        vin = self.input_coeffs @ rows(self.lmax).T
        self.input_values = vin.numpy()
        self.output_values = (self.output_coeffs @ rows(self.keep).T).numpy()
        n = self.n[:, None]
        c0, c1, c2 = (self.c[:, i : i + 1] for i in range(3))
        self.polynomial_values = (n * c0 + c1 * vin + (c2 / n) * vin * vin).numpy()

    def stats(self) -> dict:
        """The numbers of `inspect.json` `local_activations[]` (see `volrot.inspection.report`)."""
        f, y, p = self.input_values, self.output_values, self.polynomial_values
        relu = np.maximum(f, 0.0)
        total = sum(self.regimes.values())
        pos_in, neg_in = f > 0, f < 0
        wrong_neg = float(np.mean(pos_in & (y < 0)))
        wrong_pos = float(np.mean(neg_in & (y > 0)))
        mean_sq = float(np.mean(f * f))
        q = lambda v: {k: float(np.quantile(v, t)) for k, t in (("p5", 0.05), ("median", 0.5), ("p95", 0.95))}  # noqa: E731
        ratio = self.mu / np.maximum(3 * self.sigma, 1e-12)
        sampled_neg = float(np.mean(np.all(f <= 0, axis=1)))
        sampled_pos = float(np.mean(np.all(f >= 0, axis=1)))
        return {
            "layer": self.name,
            "coefficients": self.coefficients,
            "input_lmax": self.lmax,
            "output_lmax": self.keep,
            "full_lmax": 2 * self.lmax,
            "functions_total": total,
            "functions_sampled": int(f.shape[0]),
            "rotations": int(f.shape[1]),
            "mse": float(np.mean((y - relu) ** 2)),
            "nmse": float(np.mean((y - relu) ** 2) / mean_sq) if mean_sq > 0 else 0.0,
            "mse_polynomial": float(np.mean((p - relu) ** 2)),
            "truncation_rms": float(np.sqrt(np.mean((y - p) ** 2))),
            "wrong_sign_fraction": wrong_neg + wrong_pos,
            "negative_output_for_positive_input": wrong_neg,
            "positive_output_for_negative_input": wrong_pos,
            "input_mean": {"mean": float(np.mean(self.mu)), **q(self.mu)},
            "input_std": {"mean": float(np.mean(self.sigma)), **q(self.sigma)},
            "mean_over_3std": q(ratio),
            "regimes": {k: (v / total if total else 0.0) for k, v in self.regimes.items()},
            "sampled_regimes": {
                "all_negative": sampled_neg,
                "all_positive": sampled_pos,
                "mixed": 1.0 - sampled_neg - sampled_pos,
            },
        }


class LocalActivationProbe:
    """Forward hook on a `LocalActivation`: moments and regimes of every function, coefficients of
    `per_call` randomly drawn functions per call (seeded by `seed` and the call number)."""

    def __init__(self, name: str, module, per_call: int, seed: int):
        self.samples = LocalActivationSamples(name, module.coefficients, module.lmax, module.keep)
        self.per_call, self.seed, self.calls, self.offset = per_call, seed, 0, 0
        self._parts: dict[str, list] = {k: [] for k in ("index", "cin", "cout", "n", "c", "mu", "sigma")}

    @torch.no_grad()
    def __call__(self, module, inputs, output) -> None:
        n, (c0, c1, c2) = module.polynomial(inputs[0].detach().float())
        n, c0, c1, c2 = (torch.as_tensor(t).detach().cpu() for t in (n, c0, c1, c2))
        x = inputs[0].detach().float().cpu()
        y = output.detach().float().cpu()
        gen = torch.Generator().manual_seed(self.seed + 7919 * self.calls)
        self.calls += 1
        mu = x[:, :, 0]
        sigma = mean_square(x, dim=2, from_degree=1).sqrt()
        neg, pos = mu + 3 * sigma <= 0, mu - 3 * sigma >= 0
        r = self.samples.regimes
        r["all_negative"] += int(neg.sum())
        r["all_positive"] += int(pos.sum())
        r["mixed"] += int((~neg & ~pos).sum())
        sub = _pick(mu.numel(), MOMENT_SUBSET, gen)
        self._parts["mu"].append(mu.reshape(-1)[sub].double().numpy())
        self._parts["sigma"].append(sigma.reshape(-1)[sub].double().numpy())
        idx = _pick(mu.numel(), self.per_call, gen)
        shape = (x.shape[0], x.shape[1], *x.shape[3:])
        index = _unravel(idx, shape)
        index[:, 0] += self.offset
        self.offset += x.shape[0]
        self._parts["index"].append(index)
        self._parts["cin"].append(_flat_functions(x)[idx].double())
        self._parts["cout"].append(_flat_functions(y)[idx].double())
        full = lambda t: torch.as_tensor(t, dtype=torch.float64).expand(*mu.shape[:2], 1, *mu.shape[2:]).reshape(-1)  # noqa: E731
        self._parts["n"].append(full(n)[idx])
        self._parts["c"].append(torch.stack([full(c)[idx] for c in (c0, c1, c2)], 1))

    def collect(self, rotations) -> LocalActivationSamples:
        s, p = self.samples, self._parts
        s.index = np.concatenate(p["index"])
        s.input_coeffs, s.output_coeffs = torch.cat(p["cin"]), torch.cat(p["cout"])
        s.n, s.c = torch.cat(p["n"]), torch.cat(p["c"])
        s.mu, s.sigma = np.concatenate(p["mu"]), np.concatenate(p["sigma"])
        s.finish(rotations)
        return s


@dataclass
class SoftMaxSamples:
    """SoftMax value and sampled maximum of `F` drawn functions (`index` as in
    `LocalActivationSamples`)."""

    name: str
    lmax: int
    index: np.ndarray
    softmax: np.ndarray
    sampled_max: np.ndarray
    mean_over_3std: np.ndarray

    def stats(self) -> dict:
        pos = self.sampled_max > 0
        s, m = self.softmax, self.sampled_max
        corr = float(np.corrcoef(s[pos], m[pos])[0, 1]) if pos.sum() > 2 and np.std(s[pos]) > 0 else float("nan")
        return {
            "layer": self.name,
            "input_lmax": self.lmax,
            "functions_sampled": int(len(s)),
            "positive_max_fraction": float(pos.mean()),
            "pearson_positive_max": corr,
            "mean_ratio_positive_max": float(np.mean(s[pos] / m[pos])) if pos.any() else float("nan"),
            "mean_abs_softmax_negative_max": float(np.mean(np.abs(s[~pos]))) if (~pos).any() else float("nan"),
            "above_sampled_max_fraction": float(np.mean(s > m)),
        }


class SoftMaxProbe:
    """Forward hook on an `SO3SoftMax`: coefficients and SoftMax values of drawn functions."""

    def __init__(self, name: str, module, per_call: int, seed: int):
        self.name, self.lmax = name, module.activation.lmax
        self.per_call, self.seed, self.calls, self.offset = per_call, seed, 0, 0
        self._index, self._coeffs, self._values = [], [], []

    @torch.no_grad()
    def __call__(self, module, inputs, output) -> None:
        x, s = inputs[0].detach().float().cpu(), output.detach().float().cpu()
        gen = torch.Generator().manual_seed(self.seed + 7919 * self.calls + 1)
        self.calls += 1
        idx = _pick(s.numel(), self.per_call, gen)
        index = _unravel(idx, s.shape)
        index[:, 0] += self.offset
        self.offset += x.shape[0]
        self._index.append(index)
        self._coeffs.append(_flat_functions(x)[idx].double())
        self._values.append(s.reshape(-1)[idx].double())

    def collect(self, rotations) -> SoftMaxSamples:
        coeffs = torch.cat(self._coeffs)
        values = coeffs @ _rows(rotations)(self.lmax).T
        sigma = mean_square(coeffs, dim=1, from_degree=1).sqrt()
        ratio = coeffs[:, 0] / (3 * sigma).clamp_min(1e-12)
        return SoftMaxSamples(
            self.name, self.lmax, np.concatenate(self._index), torch.cat(self._values).numpy(),
            values.max(1).values.numpy(), ratio.numpy(),
        )  # fmt: skip


@dataclass
class GateSamples:
    name: str
    gates: np.ndarray

    def stats(self) -> dict:
        g = self.gates
        return {
            "layer": self.name,
            "functions_sampled": int(len(g)),
            "gate_mean": float(np.mean(g)),
            **{f"gate_{k}": float(np.quantile(g, t)) for k, t in (("p5", 0.05), ("median", 0.5), ("p95", 0.95))},
            "closed_fraction": float(np.mean(g < 0.1)),
        }


class GateProbe:
    """Forward hook on a `GlobalActivation`: the scalar gate out/in of drawn functions."""

    def __init__(self, name: str, per_call: int, seed: int):
        self.name, self.per_call, self.seed, self.calls = name, per_call, seed, 0
        self._gates = []

    @torch.no_grad()
    def __call__(self, module, inputs, output) -> None:
        x, y = inputs[0].detach().double().cpu(), output.detach().double().cpu()
        num, den = (x * y).sum(2).reshape(-1), (x * x).sum(2).reshape(-1)
        gen = torch.Generator().manual_seed(self.seed + 7919 * self.calls + 2)
        self.calls += 1
        idx = _pick(num.numel(), self.per_call, gen)
        keep = den[idx] > 0
        self._gates.append((num[idx][keep] / den[idx][keep]).numpy())

    def collect(self) -> GateSamples:
        return GateSamples(self.name, np.concatenate(self._gates) if self._gates else np.zeros(0))
