"""bench/seed_scale.py end to end on CPU at tiny sizes (64², 2 steps): pack → run → identity, so the prepared GPU
experiment cannot rot. Real faces (the two public-domain stills, aligned as the align stage does), real LPIPS and
dlib weights."""

from __future__ import annotations

import json
import re
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tests._eval_fixtures import make_face_set

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def seed_scale():
    sys.path.insert(0, str(BENCH))
    import seed_scale

    yield seed_scale
    sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def packed(tmp_path_factory, seed_scale) -> Path:
    """A pack made from a manifest whose frames are the stills themselves (as JPEG), like the demo's frames."""
    import pandas as pd

    from faceswap.data.demo import astronaut, grace_hopper
    from faceswap.imageio import write_rgb

    root = tmp_path_factory.mktemp("seedpack")
    manifest = make_face_set(root, train=6, val=2, test=3)
    stills = {"a": astronaut().image, "b": grace_hopper().image}
    for r in pd.read_parquet(manifest).itertuples():
        write_rgb(root / "frames" / r.frame_path, stills[r.identity])
    info = seed_scale.pack(manifest, root / "frames", root / "pack", wheels=False)
    assert info["faces"] == 22 and set(info["lpips"]) == {"lpips_vgg.f16.pt", "lpips_alex.f16.pt"}
    return root / "pack"


def test_pack_realigns_the_crops_the_align_stage_made(packed, seed_scale, tmp_path):
    import pandas as pd

    from faceswap.imageio import read_rgb

    manifest = seed_scale.materialize(packed, 64, tmp_path)
    df = pd.read_parquet(manifest)
    src = pd.read_parquet(packed.parent / "faces.parquet").set_index("face_id")
    for r in df.itertuples():
        ours = read_rgb(tmp_path / r.path).astype(float)
        theirs = read_rgb(packed.parent / "faces" / src.loc[r.face_id, "path"]).astype(float)
        assert np.abs(ours - theirs).mean() < 3.0  # the same warp from a JPEG q95 region of the same frame


def test_lpips_weights_travel_as_float16_and_load_as_the_real_ones(packed, seed_scale, tmp_path, monkeypatch):
    from faceswap.metrics import lpips_weights as fw

    monkeypatch.setenv("FACESWAP_CACHE_DIR", str(tmp_path))
    seed_scale.install_lpips(packed)
    path = fw.ensure_lpips_weights("vgg")  # the sidecar's sha256 holds
    assert path.parent == tmp_path / "lpips"
    ours = torch.load(path, weights_only=True)
    monkeypatch.undo()
    real = torch.load(fw.ensure_lpips_weights("vgg"), weights_only=True)
    assert torch.equal(ours["lin0.model.1.weight"], real["lin0.model.1.weight"])
    w = "net.slice1.0.weight"
    assert ours[w].dtype == torch.float32 and torch.allclose(ours[w], real[w], rtol=1e-3, atol=1e-6)


def test_the_summary_is_a_markdown_table_with_numbers_right_aligned(seed_scale):
    rows = [{"name": "convtranspose", "steps": 2.0, "recon_lpips": 0.51234}, {"name": "resize_nearest"}]
    lines = seed_scale.summary_table(rows, "tiny").splitlines()
    assert lines[:2] == ["## tiny", ""] and re.fullmatch(r"\|:-+\|(-+:\|)+", lines[3])
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert cells[0][:2] == ["configuration", "steps"] and len(cells[0]) == len(seed_scale.TABLE) + 1
    assert cells[2][:2] == ["convtranspose", "2"] and "0.5123" in cells[2]
    assert cells[3] == ["resize_nearest", *["n/a"] * len(seed_scale.TABLE)]


@pytest.mark.slow  # 50–75 s on 2 shared cores: four tiny trainings with the LPIPS-vgg loss, evaluations, dlib
def test_run_then_identity(packed, seed_scale, tmp_path):
    out = tmp_path / "out"
    tiny = ["--pack", str(packed), "--out", str(out), "--width", "8", "--bottleneck", "16",
            "--batch", "2", "--steps", "2", "--workers", "0", "--val-images", "2", "--eval-faces", "3"]
    rows = seed_scale.main(["run", *tiny, "--image-size", "64", "--variants", "convtranspose", "resize_nearest"])
    assert [r["name"] for r in rows] == ["convtranspose", "resize_nearest"]
    assert all(r["steps"] == 2 and r["recon_lpips"] > 0 and "swap_checkerboard_excess" in r for r in rows)
    with tarfile.open(out / "seed256_convtranspose.tar") as tar:
        names = set(tar.getnames())
    assert {f"seed256_convtranspose/{f}" for f in ("metrics.json", "preview.png", "zoom.png", "spectrum.png")} <= names
    assert sum(n.endswith(".jpg") for n in names) == 6  # the swaps, for identity back on the CPU
    assert re.search(r"^\| convtranspose +\|", (out / "seed256_summary.md").read_text(), re.M)
    # the day-13 comparison: the same network with the pinned stages (7×7 at 64²) and the derived (3×3)
    # (steps from a throughput calibration within a budget this time: the same number for both)
    rows = seed_scale.main(["run", *tiny, "--image-size", "64", "--mode", "bottleneck512", "--variants",
                            "resize_nearest", "--steps", "0", "--budget-s", "0.5", "--calibration-steps", "1"])
    assert [(r["encoder_stages"], r["bottleneck"]) for r in rows] == [(1, "7×7×16"), (2, "3×3×16")]
    assert rows[0]["steps"] == rows[1]["steps"] >= 1
    ids = seed_scale.main(["identity", "--pack", str(packed), "--results", str(out)])
    assert all(0 <= r["swap_identity_success"] <= 1 for r in ids)
    saved = json.loads((out / "seed256_resize_nearest.identity.json").read_text())
    assert "swap_identity_success_a2b" in saved
