"""`speedpose preprocess` on a tiny stand-in made by `speedpose synth` (every domain, masks, CLI summary)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelines import synth
from speedpose.cli import main
from speedpose.data import open_split

from test_preprocess import reference_keypoints  # noqa: E402 - tests/ is on sys.path (rootdir conftest)

Q = "q_vbs2tango_true"
R = "r_Vo2To_vbs_true"
COUNTS = {("synthetic", "train"): 4, ("synthetic", "validation"): 2, ("lightbox", "test"): 2, ("sunlamp", "test"): 2}


@pytest.fixture(scope="module")
def standin(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("standin") / "speedplus"
    synth.run(root, train=4, val=2, lightbox=2, sunlamp=2, seed=3, workers=2, progress=False)
    return root


def test_preprocess_standin(standin, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["preprocess", "--root", str(standin), "--out", str(out), "--workers", "2", "--size", "480x300"]) == 0
    table = capsys.readouterr().out
    for (domain, split), n in COUNTS.items():
        assert any(line.split()[:3] == [domain, split, str(n)] for line in table.splitlines()), table
        sp = open_split(out, domain, split)
        assert len(sp) == n and sp.labelled.all() and sp.size == (480, 300) and sp.manifest["has_masks"]
        raw = json.loads((standin / domain / f"{split}.json").read_text())
        assert sp.filenames == [r["filename"] for r in raw]
        cam = json.loads((standin / "camera.json").read_text())
        kp = reference_keypoints(cam, np.array([r[Q] for r in raw]), np.array([r[R] for r in raw]))
        np.testing.assert_allclose(sp.kp_uv, kp, atol=1e-6)
        # the rendered silhouette (mask) and the keypoint box agree: keypoints sit on Tango's extremities
        mask = sp.records[["mask_box_x0", "mask_box_y0", "mask_box_x1", "mask_box_y1"]].to_numpy()
        kpb = sp.kp_box(clipped=True)
        lo, hi = np.maximum(mask[:, :2], kpb[:, :2]), np.minimum(mask[:, 2:], kpb[:, 2:])
        inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
        union = np.prod(mask[:, 2:] - mask[:, :2], axis=1) + np.prod(kpb[:, 2:] - kpb[:, :2], axis=1) - inter
        assert (inter / union > 0.7).all(), inter / union
        for i in range(n):
            ref = cv2.resize(sp.full_image(i), (480, 300), interpolation=cv2.INTER_AREA).astype(float)
            assert np.abs(sp.image(i) - ref).mean() < 2.0
    assert main(["preprocess", "--root", str(standin), "--out", str(out), "--size", "480x300"]) == 0
    assert "nothing to do" in capsys.readouterr().out
