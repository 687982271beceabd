"""manifest.json: written whole through one definition, read back checked, older formats upgraded."""

import json
from pathlib import Path

import pytest

from vidlab.embeddings.backbones import BACKBONES
from vidlab.embeddings.manifest import FILE, VERSION, IndexRef, Manifest, ManifestError, SplitInfo

SPLIT = SplitInfo(4, {kind: f"{kind}_train.npy" for kind in ("embeddings", "labels", "valid")})


def _manifest(**changes) -> Manifest:
    return Manifest(**{"backbone": "torchvision/r3d_18", "embedding_dim": 512, "dtype": "float16",
                       "splits": {"train": SPLIT}, "index": IndexRef("/data/index_clips.csv", "ab" * 32, 4), **changes})


def test_written_atomically_and_read_back(tmp_path: Path):
    written = _manifest(frames_per_clip=8, preprocessing={"kind": "notebook"}, mlflow_run_id="0" * 32)
    assert written.write(tmp_path) == tmp_path / FILE
    assert [p.name for p in tmp_path.iterdir()] == [FILE], "a temporary file was left behind"
    raw = json.loads((tmp_path / FILE).read_text())
    # None is left out, except weights (random init) and mlflow_run_id (no run); empty row lists are written
    assert list(raw) == ["format_version", "backbone", "weights", "preprocessing", "frames_per_clip", "embedding_dim",
                         "dtype", "index", "splits", "failed_rows", "padded_rows", "mlflow_run_id"]
    assert (raw["format_version"] == VERSION and raw["weights"] is None
            and raw["splits"]["train"] == {"rows": 4, "files": SPLIT.files})
    assert Manifest.read(tmp_path) == written
    assert Manifest.read(tmp_path).to_dict() == raw


@pytest.mark.parametrize("renamed", [True, False])
def test_unversioned_manifests_are_upgraded(tmp_path: Path, renamed: bool):
    """Manifests of vidlab 0.1 (``encoder``, ``T``) and 0.2 (no ``format_version``) are still read."""
    raw = _manifest(frames_per_clip=4).to_dict()
    del raw["format_version"]
    if renamed:
        raw["encoder"], raw["T"] = raw.pop("backbone"), raw.pop("frames_per_clip")
    (tmp_path / FILE).write_text(json.dumps(raw))  # an old file, written as it was
    # format_version VERSION, backbone and frames_per_clip renamed
    assert Manifest.read(tmp_path) == _manifest(frames_per_clip=4)


@pytest.mark.parametrize("content,message", [
    (None, "embeddings: no manifest.json in {folder} (is the extraction finished?)"),
    ("{not json", "embeddings: {path} is not valid JSON (Expecting property name"),
    ("[1, 2]", "embeddings: {path} is not an extraction manifest (missing or wrong 'format_version')"),
    ('{"format_version": 99}',
     "embeddings: {path} is a manifest of format 99; this vidlab reads formats up to 2 (update vidlab)"),
    ('{"format_version": "2"}', "(missing or wrong 'format_version')"),
    ({"embedding_dim": "512"}, "(missing or wrong 'embedding_dim')"),
    ({"dtype": None}, "(missing or wrong 'dtype')"),
    ({"splits": []}, "(missing or wrong 'splits')"),
    ({"splits": {"train": {"rows": 4, "files": {"embeddings": "e.npy"}}}}, "(missing or wrong 'labels')"),
    ({"index": {"sha256": "x"}}, "(missing or wrong 'path')"),
])
def test_a_bad_manifest_is_one_line_naming_it(tmp_path: Path, content, message: str):
    if isinstance(content, dict):  # a manifest with one wrong value
        content = json.dumps({**_manifest().to_dict(), **content})
    if content is not None:
        (tmp_path / FILE).write_text(content)
    with pytest.raises(ManifestError) as err:
        Manifest.read(tmp_path)
    assert message.format(folder=tmp_path, path=tmp_path / FILE) in str(err.value) and "\n" not in str(err.value)


def test_backbones_are_registered_with_their_specs():
    """What a registered backbone holds (that every conf/backbone YAML is registered: tests/test_registry.py)."""
    assert (BACKBONES["s3d"].target.min_frames == 13
            and BACKBONES["swin3d_t"].summary.startswith("torchvision swin3d_t: Video Swin-T"))
