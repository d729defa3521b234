"""The shared NIfTI/DICOM preprocessing pipeline: geometry (RAS, spacing, centre), intensity,
the spec's JSON round trip, nibabel's bundled sample files."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tests.data_builders import write_nifti
from volrot.data.image import Image
from volrot.data.preprocess import PreprocessSpec, load_volume, preprocess, preprocess_file, spec_from_options
from volrot.errors import UserError


def _affine(spacing, origin, flips=(1, 1, 1)):
    a = np.diag([*(np.array(spacing) * np.array(flips)), 1.0])
    a[:3, 3] = origin
    return a


def test_lps_nifti_and_its_ras_twin_give_the_same_tensor(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.random((20, 18, 16)).astype(np.float32)
    ras = _affine((1.5, 1.2, 2.0), (-10.0, 5.0, 3.0))
    # the same image stored LPS: i and j run the other way, the affine says so
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:2, 3] = [data.shape[0] - 1, data.shape[1] - 1]
    lps = ras @ flip
    import nibabel as nib

    assert nib.aff2axcodes(ras) == ("R", "A", "S") and nib.aff2axcodes(lps) == ("L", "P", "S")
    a = preprocess_file(write_nifti(tmp_path / "ras.nii.gz", data, ras), PreprocessSpec(size=(16, 16, 16)))
    b = preprocess_file(write_nifti(tmp_path / "lps.nii.gz", data[::-1, ::-1, :].copy(), lps), PreprocessSpec(size=(16, 16, 16)))
    assert a.shape == (1, 16, 16, 16) and a.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=1e-6)
    # and a twin stored with permuted axes (k, i, j)
    perm = np.zeros((4, 4))
    perm[0, 1] = perm[1, 2] = perm[2, 0] = perm[3, 3] = 1.0
    c = preprocess_file(write_nifti(tmp_path / "kij.nii.gz", data.transpose(2, 0, 1).copy(), ras @ perm), PreprocessSpec(size=(16, 16, 16)))
    np.testing.assert_allclose(a, c, atol=1e-6)


def test_output_axes_are_ras_and_grid_matches_world_coordinates():
    """A linear ramp f(world) is reproduced exactly by trilinear resampling: checks reorientation,
    spacing and centring together, on an anisotropic, flipped, off-centre image."""
    shape = (24, 20, 12)
    aff = _affine((0.8, 1.25, 2.5), (40.0, -7.0, 12.0), flips=(-1, 1, -1))
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(np.float64)
    world = ijk @ aff[:3, :3].T + aff[:3, 3]
    coef = np.array([1.0, 10.0, 100.0])
    img = Image((world @ coef).astype(np.float32), aff)
    spec = PreprocessSpec(size=(8, 8, 6), spacing=(1.0, 1.5, 2.0), intensity="none", antialias=False)
    center = np.array([30.0, 2.0, -5.0])
    out = preprocess(img, spec, center=center)[0]
    o = np.stack(np.meshgrid(*[np.arange(n) for n in spec.size], indexing="ij"), -1).astype(np.float64)
    expected_world = center + np.array(spec.spacing) * (o - (np.array(spec.size) - 1) / 2)
    np.testing.assert_allclose(out, expected_world @ coef, rtol=1e-5, atol=1e-3)
    # increasing D, H, W index = towards Right, Anterior, Superior
    assert out[1, 0, 0] - out[0, 0, 0] == pytest.approx(1.0 * coef[0], rel=1e-4)
    assert out[0, 1, 0] - out[0, 0, 0] == pytest.approx(1.5 * coef[1], rel=1e-4)
    assert out[0, 0, 1] - out[0, 0, 0] == pytest.approx(2.0 * coef[2], rel=1e-4)


def test_centre_in_voxel_and_world_coordinates_agree_and_default_is_grid_centre():
    rng = np.random.default_rng(1)
    aff = _affine((1.0, 1.0, 1.0), (-3.0, 4.0, 9.0), flips=(-1, -1, 1))
    img = Image(rng.random((15, 17, 13)).astype(np.float32), aff)
    voxel = np.array([4.0, 10.0, 6.0])
    world = aff[:3, :3] @ voxel + aff[:3, 3]
    a = preprocess(img, PreprocessSpec(size=(6, 6, 6), center_space="voxel"), center=voxel)
    b = preprocess(img, PreprocessSpec(size=(6, 6, 6), center_space="world"), center=world)
    np.testing.assert_allclose(a, b, atol=1e-6)
    grid_centre = (np.array(img.array.shape) - 1) / 2
    c = preprocess(img, PreprocessSpec(size=(6, 6, 6), center_space="voxel"), center=grid_centre)
    d = preprocess(img, PreprocessSpec(size=(6, 6, 6)))
    np.testing.assert_allclose(c, d, atol=1e-6)


def test_pad_outside_the_image_and_resample_to_1mm():
    img = Image(np.full((4, 4, 4), 7.0, np.float32), _affine((2.0, 2.0, 2.0), (0, 0, 0)))
    out = preprocess(img, PreprocessSpec(size=(16, 16, 16), intensity="none", antialias=False))[0]
    # the 4 voxels of 2 mm cover world 0..6 mm, i.e. 7 output voxels of 1 mm around the centre
    inside = out[5:11, 5:11, 5:11]
    assert np.all(inside == pytest.approx(7.0)) and out[0, 0, 0] == 7.0  # pad = volume minimum for "none"
    out_ct = preprocess(Image(np.full((4, 4, 4), 400.0, np.float32), img.affine), PreprocessSpec(size=(16, 16, 16), intensity="ct"))[0]
    assert out_ct[8, 8, 8] == pytest.approx(1.0) and out_ct[0, 0, 0] == 0.0  # pad 0 outside


def test_intensity_modes():
    a = np.linspace(-2000, 3000, 1000, dtype=np.float32).reshape(10, 10, 10)
    img = Image(a, np.eye(4))
    ct = preprocess(img, PreprocessSpec(size=(10, 10, 10), intensity="ct", ct_window=(-1000, 400), antialias=False))[0]
    assert ct.min() == 0.0 and ct.max() == 1.0
    np.testing.assert_allclose(ct, np.clip((a + 1000) / 1400, 0, 1), atol=1e-6)
    mr = preprocess(img, PreprocessSpec(size=(10, 10, 10), intensity="mr", percentiles=(10, 90), antialias=False))[0]
    lo, hi = np.percentile(a, (10, 90))
    np.testing.assert_allclose(mr, np.clip((a - lo) / (hi - lo), 0, 1), atol=1e-5)
    const = preprocess(Image(np.ones((5, 5, 5), np.float32), np.eye(4)), PreprocessSpec(size=(5, 5, 5)))
    assert np.all(const == 0.0)


def test_spec_json_round_trip_and_recipe_options():
    spec = spec_from_options({"spacing": 2, "intensity": "CT", "ct_window": [-200, 300], "size": [16, 20, 24]}, 28)
    assert spec.spacing == (2.0, 2.0, 2.0) and spec.intensity == "ct" and spec.size == (16, 20, 24)
    d = json.loads(json.dumps(spec.to_dict()))
    assert d["source"] == "volume" and PreprocessSpec.from_dict(d) == spec
    assert spec_from_options({}, 32).size == (32, 32, 32)
    assert spec.key() == PreprocessSpec.from_dict(d).key() != PreprocessSpec().key()
    assert spec.key() == spec_from_options({**{k: v for k, v in d.items()}, "max_voxels": 5}, 28).key()


@pytest.mark.parametrize(
    "opts, message",
    [
        ({"spacin": 1.0}, "unknown key 'data.preprocess.spacin'"),
        ({"intensity": "pet"}, "data.preprocess.intensity must be one of ct, mr, none"),
        ({"spacing": [1, 2]}, "data.preprocess.spacing must be a number or a list of 3 numbers"),
        ({"spacing": -1}, "data.preprocess.spacing must be positive"),
        ({"ct_window": [400, -1000]}, "ct_window must be [low, high] with high > low"),
        ({"percentiles": [50, 120]}, "percentiles must satisfy"),
        ({"center_space": "lps"}, "center_space must be world or voxel"),
        ({"antialias": "yes"}, "antialias must be true or false"),
        ({"size": 1}, "size must be 3 sizes >= 2"),
    ],
)
def test_bad_preprocess_options_are_user_errors(opts, message):
    with pytest.raises(UserError) as e:
        spec_from_options(opts, 28)
    assert message in str(e.value)


def test_nibabel_bundled_sample_files_load():
    import nibabel.testing

    path = os.path.join(nibabel.testing.data_path, "anatomical.nii")
    img = load_volume(path)
    assert img.array.shape == (33, 41, 25) and np.allclose(img.spacing, 2.0)
    out = preprocess_file(path, PreprocessSpec(size=(24, 24, 24), spacing=(2.0, 2.0, 2.0)))
    assert out.shape == (1, 24, 24, 24) and np.isfinite(out).all()
    assert 0.0 <= out.min() and out.max() <= 1.0 and out.std() > 0.1
    moved = preprocess_file(
        os.path.join(nibabel.testing.data_path, "reoriented_anat_moved.nii"),
        PreprocessSpec(size=(16, 16, 16), spacing=(3.0, 3.0, 3.0)),
    )
    assert moved.shape == (1, 16, 16, 16) and np.isfinite(moved).all()
    # real bad input shipped by nibabel: SPM's resampling left NaN outside the brain
    with pytest.raises(UserError, match=r"resampled_anat_moved\.nii: 153 NaN and 0 Inf voxels"):
        preprocess_file(os.path.join(nibabel.testing.data_path, "resampled_anat_moved.nii"), PreprocessSpec())
    with pytest.raises(UserError, match=r"example4d\.nii\.gz: 4D image with 2 volumes"):
        preprocess_file(os.path.join(nibabel.testing.data_path, "example4d.nii.gz"), PreprocessSpec())


def test_nibabel_sample_matches_nibabels_own_canonical_reorientation(tmp_path):
    """anatomical.nii is stored LAS; nibabel's `as_closest_canonical` rewrites it as RAS.
    Both files must give the same tensor."""
    import nibabel as nib
    import nibabel.testing

    path = os.path.join(nibabel.testing.data_path, "anatomical.nii")
    img = nib.load(path)
    assert nib.aff2axcodes(img.affine) == ("L", "A", "S")
    canon = nib.as_closest_canonical(img)
    assert nib.aff2axcodes(canon.affine) == ("R", "A", "S")
    nib.save(canon, str(tmp_path / "canon.nii"))
    spec = PreprocessSpec(size=(20, 24, 16), spacing=(1.5, 1.5, 1.5))
    np.testing.assert_allclose(preprocess_file(path, spec), preprocess_file(tmp_path / "canon.nii", spec), atol=1e-6)


def _reference(img: Image, spec: PreprocessSpec, center) -> np.ndarray:
    """The pipeline written naively on the whole image (no cropping to the reachable box)."""
    from scipy import ndimage

    from volrot.data.preprocess import normalise_intensity, world_center

    data, pad = normalise_intensity(img.array, spec)
    s = np.array(spec.spacing)
    factor = (np.abs((img.affine[:3, :3] / img.spacing).T) @ s) / img.spacing
    data = ndimage.gaussian_filter(data, np.maximum(0, (factor - 1) / 2), mode="nearest")
    inv = np.linalg.inv(img.affine)
    c = world_center(img, center, spec.center_space)
    off = inv[:3, :3] @ (c - s * (np.array(spec.size) - 1) / 2) + inv[:3, 3]
    return ndimage.affine_transform(data, inv[:3, :3] @ np.diag(s), offset=off, output_shape=spec.size,
                                    order=1, mode="constant", cval=pad, prefilter=False)[None]


@pytest.mark.parametrize("center", [None, (30.0, 20.0, 10.0), (-5.0, 2.0, 40.0), (500.0, 0.0, 0.0)])
def test_cropped_processing_equals_whole_image_processing(center):
    rng = np.random.default_rng(2)
    aff = _affine((0.7, 0.7, 2.5), (-20.0, -15.0, -10.0), flips=(-1, 1, 1))
    img = Image((rng.random((64, 60, 24)) * 1000).astype(np.float32), aff)
    for intensity in ("mr", "none"):
        spec = PreprocessSpec(size=(10, 12, 8), spacing=(1.5, 1.5, 1.5), intensity=intensity, center_space="world")
        np.testing.assert_allclose(preprocess(img, spec, center), _reference(img, spec, center), rtol=1e-5, atol=1e-5)


def test_downsampling_twins_agree_with_antialiasing(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.random((30, 26, 20)).astype(np.float32)
    ras = _affine((0.8, 0.8, 1.0), (1.0, 2.0, 3.0))
    flip = np.diag([-1.0, 1.0, -1.0, 1.0])
    flip[[0, 2], 3] = [data.shape[0] - 1, data.shape[2] - 1]
    spec = PreprocessSpec(size=(8, 8, 8), spacing=(3.0, 3.0, 3.0))
    a = preprocess(Image(data, ras), spec)
    b = preprocess(Image(data[::-1, :, ::-1].copy(), ras @ flip), spec)
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert a.std() < data.std()  # smoothed before the 3 mm resampling
