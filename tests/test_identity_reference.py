"""The identity stage on real crops: centroids from training crops only, the test baseline, a round trip through
the file, and clear errors for a missing or unreadable reference."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from faceswap.identity_reference import IdentityReference, IdentityReferenceError, build_reference

from ._eval_fixtures import eval_params, make_face_set, make_identity_reference


@pytest.fixture(scope="module")
def faces_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ident")
    make_face_set(root, train=10, val=2, test=6)
    return root


def test_reference_separates_the_two_people_and_round_trips(faces_root):
    params = eval_params(faces_root)
    path = make_identity_reference(faces_root, params)
    ref = IdentityReference.load(path)
    assert ref.identities == ("a", "b") and ref.coverage == params.align.coverage
    assert ref.train_faces == {"a": 10, "b": 10}  # training crops only (6 test crops each are not in it)
    assert all(len(ref.truth_success[i]) == 6 and ref.truth_success[i].all() for i in ("a", "b"))
    assert np.linalg.norm(ref.centroids["a"] - ref.centroids["b"]) > 0.5  # two different people
    summary = json.loads((faces_root / "metrics" / "identity.json").read_text())
    assert summary["truth_identity_success"] == 1.0 and summary["test_faces"] == {"a": 6, "b": 6}
    # fewer training crops in the centroid: same people, nearly the same centroid
    small = build_reference(params, params.paths.accepted, params.paths.faces, train_faces=4)
    assert small.train_faces == {"a": 4, "b": 4}
    assert np.linalg.norm(small.centroids["a"] - ref.centroids["a"]) < 0.15


def test_missing_or_unreadable_reference_is_named(tmp_path):
    with pytest.raises(IdentityReferenceError, match=r"not found.*dvc repro identity"):
        IdentityReference.load(tmp_path / "nope.npz")
    bad = tmp_path / "reference.npz"
    bad.write_bytes(b"not an npz")
    with pytest.raises(IdentityReferenceError, match=re.escape(str(bad))):
        IdentityReference.load(bad)


def test_evaluation_scores_a_swap_that_keeps_the_source_low_and_a_true_swap_high(faces_root):
    """identity_metrics on evaluation outputs: a 'decoder' that returns the source face (the 7×7 failure) scores
    ≈ 0 in both directions; one that returns a real face of the target scores ≈ 1."""
    import torch

    from faceswap.data.dataset import load_faces
    from faceswap.evaluation.metrics import identity_metrics

    params = eval_params(faces_root)
    ref = IdentityReference.load(make_identity_reference(faces_root, params))
    test = load_faces(params.paths.accepted, ("a", "b"), "test", 64, params.paths.faces)
    t = {i: torch.from_numpy(test[i].images).permute(0, 3, 1, 2).float() / 255 for i in ("a", "b")}
    kept = identity_metrics({"swap_a": t["a"], "swap_b": t["b"]}, ("a", "b"), ref, {})
    assert kept["swap_identity_success_a2b"] == 0.0 and kept["swap_identity_success_b2a"] == 0.0
    assert kept["swap_identity_margin"] < -0.3
    per: dict[str, list[float]] = {}
    swapped = identity_metrics({"swap_a": t["b"], "swap_b": t["a"]}, ("a", "b"), ref, per)
    assert swapped["swap_identity_success"] == 1.0 and swapped["swap_identity_margin"] > 0.3
    assert len(per["swap_identity_success_a2b"]) == 6 and swapped["truth_identity_success"] == 1.0
