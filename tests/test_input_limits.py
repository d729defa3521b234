"""Hostile inputs are judged by their header, before anything is decompressed (issue #13, item 3).

A 2 MB `.nii.gz` whose header claims 640³ float64 (2.1 GB of voxels) is refused in every path
that reads images: the reader itself, `volrot predict` and `volrot train` on a manifest (which
goes through the preprocessing cache). Each refusing process's peak RSS is measured
(`ru_maxrss` of a child process) and held under the ceilings documented in docs/data.md.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.data_builders import blob_volume, write_inflating_nifti, write_manifest, write_nifti, write_series
from tests.predict_builders import SIZE, make_checkpoint
from volrot.data.dicom import read_dicom_series
from volrot.data.image import DEFAULT_MAX_BYTES
from volrot.data.nifti import MAX_HEADER_BYTES, read_nifti
from volrot.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
# Documented in docs/data.md ("Limits"): peak RSS of a process refusing an oversized input.
READER_CEILING_MIB = 256  # Python + numpy + nibabel reading the header and refusing
CLI_CEILING_MIB = 1024  # the whole `volrot predict` / `volrot train` process (torch imported)

# Runs a command as its only child and reports the child's peak RSS (KiB on Linux). A small
# wrapper process, because a child forked straight from pytest would count pytest's own memory
# (Linux keeps the pre-exec high-water mark in ru_maxrss).
_MEASURE = (
    "import resource, subprocess, sys\n"
    "r = subprocess.run(sys.argv[1:])\n"
    "print('PEAK_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(r.returncode)\n"
)


def run_measured(args: list[str], cwd: Path) -> tuple[int, str, str, float]:
    """(exit code, stdout, stderr, peak RSS in MiB) of `python args...`."""
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE, sys.executable, *args],
        cwd=cwd, env=ENV, capture_output=True, text=True, encoding="utf-8", timeout=600,
    )  # fmt: skip
    lines = proc.stderr.rstrip("\n").splitlines()
    assert lines and lines[-1].startswith("PEAK_KIB "), proc.stderr[-2000:]
    peak_mib = int(lines[-1].split()[1]) / 1024
    return proc.returncode, proc.stdout, "\n".join(lines[:-1]), peak_mib


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    p = write_inflating_nifti(tmp_path_factory.mktemp("hostile") / "bomb.nii.gz")
    assert p.stat().st_size < 3 * 2**20  # ~2 MB on disk for 2.1 GB of voxels
    return p


def test_inflating_builder_writes_a_readable_file(tmp_path):
    """The hostile file is a real NIfTI: the same builder at a small size reads back as zeros."""
    small = write_inflating_nifti(tmp_path / "small.nii.gz", shape=(40, 30, 20), dtype=np.float64, block=4096)
    img = read_nifti(small)
    assert img.array.shape == (40, 30, 20) and not img.array.any()


def test_reader_refuses_from_the_header_with_bounded_memory(hostile, tmp_path):
    code = (
        "import sys\n"
        "from volrot.data.nifti import read_nifti\n"
        "from volrot.errors import UserError\n"
        "try:\n"
        "    read_nifti(sys.argv[1])\n"
        "except UserError as e:\n"
        "    print(e)\n"
    )
    rc, stdout, stderr, peak_mib = run_measured(["-c", code, str(hostile)], tmp_path)
    assert rc == 0, stderr[-2000:]
    message = stdout.strip()
    assert "header claims 640×640×640 float64 = 2.1 GB of voxel data" in message
    assert "data.preprocess.max_bytes" in message
    print(f"reader refusing 640³ float64: peak RSS {peak_mib:.0f} MiB (ceiling {READER_CEILING_MIB})")
    assert peak_mib < READER_CEILING_MIB


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def test_predict_gives_an_error_row_with_bounded_memory(hostile, tmp_path):
    ck = make_checkpoint(tmp_path / "ck.safetensors", preprocessing={"source": "generated", "size": SIZE, "intensity": "none", "scale": 1.0, "offset": 0.0})
    good = write_nifti(tmp_path / "good.nii.gz", blob_volume(0, shape=(SIZE,) * 3))
    out = tmp_path / "preds.csv"
    rc, stdout, stderr, peak = run_measured(
        ["-m", "volrot", "predict", str(ck), str(hostile), str(good), "--device", "cpu", "--out", str(out), "-q"], tmp_path
    )
    print(f"volrot predict refusing 640³ float64: exit {rc}, peak RSS {peak:.0f} MiB (ceiling {CLI_CEILING_MIB})")
    assert rc == 2
    assert "640×640×640 float64" in _one_error_line(stderr)
    assert "1 of 2 inputs predicted" in stdout
    assert peak < CLI_CEILING_MIB


def test_train_on_a_manifest_refuses_before_a_run_folder_exists(hostile, tmp_path):
    rows = []
    for label in ("a", "b"):
        for i, split in enumerate(("train", "train", "val", "test")):
            write_nifti(tmp_path / f"img/{label}{i}.nii.gz", blob_volume(i, shape=(8, 8, 8), label=int(label == "b")))
            rows.append(f"img/{label}{i}.nii.gz,{label},{split}")
    manifest = write_manifest(tmp_path / "manifest.csv", "path,label,split", [*rows, f"{hostile},a,train"])
    out = tmp_path / "runs"
    rc, _, stderr, peak = run_measured(
        ["-m", "volrot", "train", "--data", f"nifti:{manifest}", "--size", "8", "--epochs", "1", "--device", "cpu",
         "--set", "model.width=2", "--set", f"data.cache_dir={tmp_path / 'cache'}", "--out", str(out), "-q"],
        tmp_path,
    )  # fmt: skip
    print(f"volrot train refusing 640³ float64: exit {rc}, peak RSS {peak:.0f} MiB (ceiling {CLI_CEILING_MIB})")
    assert rc == 2
    line = _one_error_line(stderr)
    assert "640×640×640 float64" in line and "manifest.csv line 10" in line
    assert not out.exists()
    assert peak < CLI_CEILING_MIB


def test_voxel_data_placed_far_into_the_stream_is_refused(tmp_path):
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((8, 8, 8))
    hdr.set_data_dtype(np.float32)
    hdr["vox_offset"] = 2**30  # nibabel would decompress 1 GiB of "extensions" to get there
    p = tmp_path / "far.nii.gz"
    p.write_bytes(gzip.compress(hdr.binaryblock + b"\0" * 4))
    with pytest.raises(UserError, match=rf"voxel data at byte {2**30}, beyond the {MAX_HEADER_BYTES} bytes"):
        read_nifti(p)


def test_uncompressed_file_shorter_than_its_header_claims(tmp_path):
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((512, 512, 400))  # 400 MB of float32 claimed, 100 bytes present
    hdr.set_data_dtype(np.float32)
    hdr["vox_offset"] = 352
    p = tmp_path / "short.nii"
    p.write_bytes(hdr.binaryblock + b"\0" * 104)
    with pytest.raises(UserError, match=r"truncated or corrupt voxel data \(file holds 452 bytes, its header needs 419430752\)"):
        read_nifti(p)


def test_byte_limit_applies_to_nifti_and_dicom(tmp_path):
    p = write_nifti(tmp_path / "v.nii.gz", np.zeros((10, 10, 10), np.float64))
    assert read_nifti(p, max_bytes=8000).array.shape == (10, 10, 10)
    with pytest.raises(UserError, match=r"10×10×10 float64 = 8000 bytes of voxel data, above the limit of 7999 bytes"):
        read_nifti(p, max_bytes=7999)
    write_series(tmp_path / "series", n_slices=3)
    s = tmp_path / "series"
    with pytest.raises(UserError, match=r"float32 = .* of voxel data, above the limit of 1 kB"):
        read_dicom_series(s, max_bytes=1000)
    assert DEFAULT_MAX_BYTES == 2**30
