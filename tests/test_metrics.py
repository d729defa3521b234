import math

import numpy as np
import pytest
from medmnist.evaluator import Evaluator, getACC, getAUC

from volrot.engine.metrics import compute_metrics, selection_key


def _probs(rng, n, k):
    z = rng.normal(size=(n, k))
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("task,k", [("binary", 2), ("multi-class", 3), ("multi-class", 11)])
def test_matches_medmnist_functions(task, k):
    rng = np.random.default_rng(k)
    y = rng.integers(0, k, size=200)
    p = _probs(rng, 200, k)
    # a few probabilities exactly at the binary threshold
    p[:3, -1] = 0.5
    p[:3, 0] = 0.5
    ours = compute_metrics(task, y, p)
    assert ours["auc"] == pytest.approx(getAUC(y[:, None], p, task), abs=1e-12)
    assert ours["acc"] == pytest.approx(getACC(y[:, None], p, task), abs=1e-12)


def test_matches_medmnist_evaluator_on_real_adrenal(medmnist_dir):
    ev = Evaluator("adrenalmnist3d", "test", size=28, root=str(medmnist_dir))
    rng = np.random.default_rng(0)
    p = _probs(rng, len(ev.labels), 2)
    p[:, 1] = 0.7 * p[:, 1] + 0.3 * ev.labels[:, 0]  # informative scores
    p[:, 0] = 1 - p[:, 1]
    auc, acc = ev.evaluate(p)
    ours = compute_metrics("binary", ev.labels, p)
    assert ours["auc"] == pytest.approx(auc, abs=1e-12)
    assert ours["acc"] == pytest.approx(acc, abs=1e-12)
    assert 0.5 < ours["auc"] < 1.0


def test_absent_class_and_selection_key():
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.8, 0.1, 0.1], [0.6, 0.2, 0.2], [0.1, 0.8, 0.1], [0.3, 0.4, 0.3]])
    m = compute_metrics("multi-class", y, p)
    assert m["acc"] == 1.0 and m["auc"] == pytest.approx(1.0)
    single = compute_metrics("binary", np.array([1, 1]), np.array([[0.2, 0.8], [0.6, 0.4]]))
    assert math.isnan(single["auc"]) and single["acc"] == 0.5
    assert selection_key({"auc": math.nan, "acc": 1.0}) < selection_key({"auc": 0.1, "acc": 0.0})
