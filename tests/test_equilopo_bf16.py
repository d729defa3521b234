"""EquiLoPO under bf16 autocast on the CPU, and its voxel-major memory layout.

Under autocast only the large convs run in bf16 (`SO3Conv.bf16_min_voxels`); activations, batch
norm and the head stay fp32, and the logits stay invariant under the 24 grid rotations to
1e-4 (docs/benchmarks.md). The layout (`volrot.models.equilopo.layout`) changes strides only.
"""

from __future__ import annotations

import pytest
import torch

from volrot.benchmark import invariance_error
from volrot.models import create_model
from volrot.models.equilopo import SO3Conv
from volrot.models.equilopo.layout import from_rows, is_so3_last, so3_last, to_rows


def _model(**kw):
    torch.manual_seed(0)
    return create_model("equilopo", num_classes=3, in_channels=1, blocks=1, channels=2, lmax=1, filter_lmax=2, **kw).eval()


def _x(size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 1, size, size, size, generator=torch.Generator().manual_seed(seed))


def _logits(model, x, amp: bool) -> torch.Tensor:
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        return model(x)


def test_bf16_convs_keep_logits_invariant_to_1e_4():
    model, x = _model(), _x(20)  # 20³ = 8000 voxels: the convs run in bf16
    assert 20**3 >= SO3Conv.bf16_min_voxels
    fp32, bf16 = _logits(model, x, False), _logits(model, x, True)
    assert bf16.dtype == torch.float32  # the head runs in fp32
    # non-vacuity: bf16 was used (logits moved by more than fp32 rounding) ...
    assert (bf16 - fp32).abs().max() / fp32.abs().max() > 1e-5
    # ... and the logits still depend on the input
    assert (_logits(model, _x(20, seed=1), True) - bf16).abs().max() > 1e-3
    assert invariance_error(model, x, amp=True) <= 1e-4


def test_small_volumes_stay_fp32_under_autocast(monkeypatch):
    model, x = _model(), _x(10)
    assert 10**3 < SO3Conv.bf16_min_voxels
    fp32, amp = _logits(model, x, False), _logits(model, x, True)
    assert torch.allclose(amp, fp32, rtol=1e-5, atol=1e-6)
    monkeypatch.setattr(SO3Conv, "bf16_min_voxels", 1)  # now every conv is bf16: the logits move
    assert (_logits(model, x, True) - fp32).abs().max() / fp32.abs().max() > 1e-5


@pytest.mark.parametrize("shape", [(2, 3, 10, 4, 5, 6), (1, 1, 1, 2, 2, 2)])
def test_so3_last_layout_round_trips(shape):
    x = torch.randn(*shape)
    y = so3_last(x)
    assert is_so3_last(y) and torch.equal(y, x) and y.shape == x.shape
    assert so3_last(y) is y
    rows = to_rows(y)
    assert rows.shape == (x.numel() // shape[2], shape[2])
    assert rows.data_ptr() == y.data_ptr()  # a view, no copy
    assert torch.equal(from_rows(rows, y), x)


def test_layers_keep_the_layout_and_values():
    """A contiguous input and its SO(3)-last copy give the same outputs through the layers."""
    from volrot.models.equilopo import SymmetricAvgPool

    model = _model()
    with torch.no_grad():
        feats = model.bn0(model.lift(_x(8).unsqueeze(2)))
        assert is_so3_last(feats)
        for layer in (model.act0, lambda f: model.conv0(model.act0(f)), SymmetricAvgPool()):
            a, b = layer(feats.contiguous()), layer(feats)
            assert is_so3_last(b) and torch.allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cpu_amp", [False, True])
def test_train_cpu_amp_runs_the_convs_in_bf16(tmp_path, monkeypatch, cpu_amp):
    """`train.cpu_amp` turns bf16 autocast on for CPU training (off by default); the run trains
    and its checkpoint holds fp32 weights."""
    import torch.nn.functional as F

    import volrot.engine.train as engine
    from volrot.config import recipe_from_dict

    seen = []
    conv3d = F.conv3d

    def spy(x, w, *a, **k):
        seen.append(torch.is_autocast_enabled("cpu"))
        return conv3d(x, w, *a, **k)

    monkeypatch.setattr(F, "conv3d", spy)
    monkeypatch.setattr(SO3Conv, "bf16_min_voxels", 1)  # 16³ volumes: bf16 only when asked
    recipe = recipe_from_dict({
        "model": {"arch": "equilopo", "blocks": 1, "channels": 2, "lmax": 1},
        "data": {"name": "shapes", "size": 16, "max_samples": 8},
        "train": {"epochs": 1, "batch_size": 4, "device": "cpu", "cpu_amp": cpu_amp, "out": str(tmp_path), "name": "run"},
    })
    result = engine.train(recipe, progress=False)
    assert result.best_checkpoint.is_file()
    assert seen and any(seen) == cpu_amp  # autocast was on during training steps only with cpu_amp
    from safetensors.torch import load_file

    assert all(t.dtype == torch.float32 for t in load_file(result.best_checkpoint).values() if t.is_floating_point())


@pytest.mark.parametrize("coefficients", ["adaptive", "trainable"])
def test_activation_in_row_blocks_equals_one_block(monkeypatch, coefficients):
    """The activation's row blocks (`CHUNK_ROWS`) change nothing: forward and gradients equal."""
    import volrot.models.equilopo.activation as act
    from volrot.models.equilopo import LocalActivation

    torch.manual_seed(0)
    layer = LocalActivation(1, coefficients).double()
    x = torch.randn(2, 3, 10, 6, 7, 5, dtype=torch.float64, requires_grad=True)
    monkeypatch.setattr(act, "CHUNK_ROWS", 10**9)
    one = layer(x)
    g = torch.randn_like(one)
    grads_one = torch.autograd.grad((one * g).sum(), [x, *layer.parameters()])
    monkeypatch.setattr(act, "CHUNK_ROWS", 97)  # 1260 rows -> 13 blocks, the last one short
    assert len(act._blocks(x.numel() // 10, x.device)) == 13
    blocked = layer(x)
    grads_blocked = torch.autograd.grad((blocked * g).sum(), [x, *layer.parameters()])
    assert torch.equal(one, blocked)
    for a, b in zip(grads_one, grads_blocked):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        assert torch.equal(layer(x), one)
