"""The real REST server (`faceswap serve` → `mlflow models serve`) on a loopback port, against a tiny registered
model: aligned crops and full frames of the public-domain faces in both directions, bad rows, wrong schemas, and
a burst of concurrent requests. One server for the whole module; it is always stopped in the fixture's teardown."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from faceswap.serving.pyfunc import encode_png

from ._serving import register_tiny, write_params

MAX_PIXELS = 1_000_000
MAX_BYTES = 2_000_000


def _decode(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


def _post(url: str, body: bytes | dict, timeout: float = 120) -> tuple[int, dict | str]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url + "/invocations", data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def _records(*rows: tuple) -> dict:
    return {"dataframe_records": [{"image": i, "direction": d, "aligned": a} for i, d, a in rows]}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from faceswap.serving.server import free_port

    root = tmp_path_factory.mktemp("serve")
    reg = register_tiny(root)
    params = write_params(root / "params.yaml", reg, max_image_pixels=MAX_PIXELS, max_image_bytes=MAX_BYTES)
    port = free_port()
    log = root / "serve.log"
    env = {**os.environ, "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "faceswap.cli", "serve", "--params", str(params), "--port",
                                 str(port)], stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.monotonic()
        while "ready in" not in log.read_text(errors="replace"):
            assert proc.poll() is None, f"faceswap serve exited early:\n{log.read_text(errors='replace')[-3000:]}"
            assert time.monotonic() - t0 < 150, f"server not ready after 150 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        with urllib.request.urlopen(url + "/ping", timeout=5) as r:
            assert r.status == 200
        yield {**reg, "url": url, "port": port, "log": log, "proc": proc}
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def crops(server):
    root = server["root"] / "faces"
    return {ident: np.asarray(Image.open(root / ident / "0024.png").convert("RGB")) for ident in ("a", "b")}


@pytest.mark.slow
def test_serve_prints_a_curl_example_and_stays_on_loopback(server):
    text = server["log"].read_text(errors="replace")
    assert f"curl -s http://127.0.0.1:{server['port']}/invocations" in text
    assert "base64 -w0 face.jpg" in text and "--host 127.0.0.1" in text


@pytest.mark.slow
def test_aligned_crops_both_directions(server, crops):
    status, body = _post(server["url"], _records((encode_png(crops["a"]), "a2b", True),
                                                 (encode_png(crops["a"]), "b2a", True),
                                                 (encode_png(crops["b"]), "b2a", True)))
    assert status == 200, body
    rows = body["predictions"]
    assert [r["identity"] for r in rows] == ["b", "a", "a"]
    ims = [_decode(r["image"]) for r in rows]
    for r, im in zip(rows, ims, strict=True):
        assert r["error"] is None and r["aligned"] is True and r["variant"] == "resize_nearest"
        assert im.shape == (64, 64, 3) and im.std() > 5
    assert np.abs(ims[0].astype(int) - ims[1]).mean() > 1  # the two decoders render different people


@pytest.mark.slow
def test_full_frames_both_directions_and_a_frame_without_a_face(server, astronaut, grace_hopper):
    rng = np.random.default_rng(0)
    noface = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    status, body = _post(server["url"], _records((encode_png(astronaut), "a2b", False),
                                                 (encode_png(grace_hopper), "b2a", False),
                                                 (encode_png(noface), "a2b", False)))
    assert status == 200, body
    a2b, b2a, none = body["predictions"]
    for r, src, ident in ((a2b, astronaut, "b"), (b2a, grace_hopper, "a")):
        assert r["error"] is None and r["face_found"] is True and r["identity"] == ident
        assert r["score"] > 0.95 and (r["width"], r["height"]) == (src.shape[1], src.shape[0])
        out = _decode(r["image"])
        assert out.shape == src.shape
        x0, y0, x1, y1 = (int(v) for v in json.loads(r["box"]))
        assert 0 <= x0 < x1 <= src.shape[1] and 0 <= y0 < y1 <= src.shape[0]
        face = (slice(y0, y1), slice(x0, x1))
        assert np.abs(out[face].astype(int) - src[face]).mean() > 3  # the face was replaced ...
        assert np.array_equal(out[-60:, :60], src[-60:, :60])  # ... and the far corner was left alone
    assert none["face_found"] is False and none["error"] is None and none["score"] is None
    assert np.array_equal(_decode(none["image"]), noface)  # returned unchanged, and flagged


@pytest.mark.slow
def test_bad_rows_get_their_own_error_and_never_break_the_others(server, crops, astronaut):
    rng = np.random.default_rng(1)
    too_many_pixels = encode_png(np.zeros((1000, 1100, 3), np.uint8))  # 1.1 M pixels > 1 M, tiny file
    too_many_bytes = encode_png(rng.integers(0, 255, (900, 1000, 3), dtype=np.uint8))  # ~2.7 MB > 2 MB
    good = encode_png(crops["a"])
    status, body = _post(server["url"], _records(
        (good, "a2b", True),
        (base64.b64encode(b"this is not an image").decode(), "a2b", True),
        ("%%% not base64 %%%", "a2b", False),
        (too_many_pixels, "a2b", False),
        (too_many_bytes, "a2b", False),
        (good, "c2d", True),
        (None, "a2b", True),
        (good, None, True),
        (encode_png(astronaut), "a2b", False),
    ))
    assert status == 200, body
    rows = body["predictions"]
    assert len(rows) == 9
    errors = [r["error"] for r in rows]
    assert errors[0] is None and rows[0]["image"] and _decode(rows[0]["image"]).shape == (64, 64, 3)
    assert "not a PNG or JPEG" in errors[1]
    assert "not valid base64" in errors[2]
    assert "too large" in errors[3] and "max_image_pixels" in errors[3]
    assert "too large" in errors[4] and "max_image_bytes" in errors[4]
    assert "direction must be one of a2b, b2a" in errors[5] and "'c2d'" in errors[5]
    assert errors[6] == "missing field: image" and errors[7] == "missing field: direction"
    assert errors[8] is None and rows[8]["face_found"] is True
    for r in rows[1:8]:
        assert r["image"] is None


@pytest.mark.slow
def test_wrong_schema_gets_a_400(server, crops):
    good = encode_png(crops["a"])
    status, body = _post(server["url"], {"dataframe_records": [{"image": good, "direction": "a2b"}]})
    assert status == 400 and "aligned" in body  # a missing column is a malformed request, not a bad row
    status, body = _post(server["url"], b"not json at all")
    assert status == 400
    status, body = _post(server["url"], {"dataframe_records": [{"image": good, "direction": "a2b", "aligned": True}]})
    assert status == 200  # the server is still fine afterwards


@pytest.mark.slow
def test_a_burst_of_concurrent_requests(server, crops, grace_hopper):
    jobs = []
    for i in range(16):
        if i % 4 == 3:
            jobs.append(_records((encode_png(grace_hopper), "b2a", False)))
        else:
            ident, d = ("a", "a2b") if i % 2 else ("b", "b2a")
            jobs.append(_records((encode_png(crops[ident]), d, True)))
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda b: _post(server["url"], b), jobs))
    ref = {}
    for job, (status, body) in zip(jobs, answers, strict=True):
        assert status == 200, body
        (row,) = body["predictions"]
        assert row["error"] is None and row["image"]
        req = job["dataframe_records"][0]
        if req["aligned"]:
            key = (req["direction"], req["image"])
            ref.setdefault(key, row["image"])
            assert row["image"] == ref[key]  # same input, same answer, however the requests interleave
        else:
            assert row["face_found"] is True and _decode(row["image"]).shape == grace_hopper.shape
