"""SPEED+ label files: schema, validation messages, key order independence."""

import json

import numpy as np
import pytest

from speedpose.errors import InputError
from speedpose.labels import PoseLabel, label_file, read_labels, write_labels


def _write(tmp_path, data):
    p = tmp_path / "test.json"
    p.write_text(json.dumps(data))
    return p


def test_real_labels_read_with_any_key_order(real_sample, tmp_path):
    labels = read_labels(real_sample / "lightbox" / "test.json")
    assert len(labels) == 10 and labels[0].filename == "img000001.jpg"
    np.testing.assert_allclose(labels[0].q_wxyz[0], -0.152482913371, rtol=1e-9)  # scalar first, sign kept
    raw = json.loads((real_sample / "lightbox" / "test.json").read_text())
    reordered = [dict(reversed(list(r.items()))) for r in raw]
    again = read_labels(_write(tmp_path, reordered))
    np.testing.assert_allclose(again[3].r_cam_m, labels[3].r_cam_m)


def test_round_trip_and_unlabelled(tmp_path):
    labs = [PoseLabel("a.jpg", np.array([0, 0, 1.0, 0]), np.array([0.1, 0.2, 3.0])), PoseLabel("b.jpg")]
    write_labels(tmp_path / "l.json", labs)
    back = read_labels(tmp_path / "l.json")
    assert back[0].labelled and not back[1].labelled
    assert json.loads((tmp_path / "l.json").read_text())[1] == {"filename": "b.jpg"}


@pytest.mark.parametrize("record,message", [
    ({"filename": "sub/a.jpg"}, "not a plain name"),
    ({"filename": ".."}, "not a plain name"),
    ({"filename": 3}, "non-empty file name"),
    ({"filename": "a.jpg", "q_vbs2tango_true": [1, 0, 0, 0]}, "need both or neither"),
    ({"filename": "a.jpg", "q_vbs2tango_true": [1, 0, 0], "r_Vo2To_vbs_true": [0, 0, 1]}, "list of 4 numbers"),
    ({"filename": "a.jpg", "q_vbs2tango_true": [float("nan"), 0, 0, 1], "r_Vo2To_vbs_true": [0, 0, 1]},
     "non-finite"),
    ({"filename": "a.jpg", "q_vbs2tango_true": [1, 0.1, 0, 0], "r_Vo2To_vbs_true": [0, 0, 1]}, "norm 1.004988"),
    ({"filename": "a.jpg", "q_vbs2tango_true": [1, 0, 0, 0], "r_Vo2To_vbs_true": [0, 0, -1]}, "must be > 0"),
])
def test_bad_records_are_located(tmp_path, record, message):
    p = _write(tmp_path, [{"filename": "ok.jpg"}, record])
    with pytest.raises(InputError, match=message) as exc:
        read_labels(p)
    assert "index 1" in str(exc.value) and str(p) in str(exc.value)


def test_duplicates_and_malformed_json(tmp_path):
    with pytest.raises(InputError, match="duplicate file name \\(first at index 0\\)"):
        read_labels(_write(tmp_path, [{"filename": "a.jpg"}, {"filename": "a.jpg"}]))
    p = tmp_path / "bad.json"
    p.write_text("[{\"filename\": \"a.jpg\"},\n")
    with pytest.raises(InputError, match="line 2 column 1: malformed JSON"):
        read_labels(p)
    with pytest.raises(InputError, match="file not found"):
        read_labels(tmp_path / "missing.json")


def test_label_file_layout(tmp_path):
    assert label_file(tmp_path, "synthetic", "train") == tmp_path / "synthetic" / "train.json"
    assert label_file(tmp_path, "sunlamp") == tmp_path / "sunlamp" / "test.json"
    with pytest.raises(InputError, match="unknown domain"):
        label_file(tmp_path, "moon")


def test_atomic_writes_have_normal_permissions(tmp_path):
    import os
    import stat
    write_labels(tmp_path / "l.json", [PoseLabel("a.jpg")])
    mode = stat.S_IMODE(os.stat(tmp_path / "l.json").st_mode)
    assert mode & stat.S_IRGRP and mode & stat.S_IROTH  # not mkstemp's 0600
