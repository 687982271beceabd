from pathlib import Path

import numpy as np

from vidlab.choices import choice_values
from vidlab.registry import build_node
from vidlab.restoration.corruption import CircularStain
from vidlab.restoration.datamodule import RestorationDataModule, StainedClipStream, read_clips
from vidlab.restoration.datasets import MovingDigitsConfig, VideoFolderConfig, build_clips, cut_clips, split_videos
from vidlab.restoration.digits import MovingDigits
from vidlab.video import count_frames, iter_frames, write_video

from conftest import moving_square_frames


def _dataset(name: str, **values):
    """A dataset choice as shipped in conf/dataset/, with the test's values."""
    schema = {"moving_digits": MovingDigitsConfig, "video_folder": VideoFolderConfig}[name]
    return build_node("dataset", schema, {**choice_values("dataset", name), **values})

def test_moving_digits_deterministic_by_seed():
    gen = MovingDigits(72, 128, 10, 1, 3, 28, (1.0, 3.0))
    a = gen.render(np.random.default_rng([0, 0, 1]))
    b = gen.render(np.random.default_rng([0, 0, 1]))
    c = gen.render(np.random.default_rng([1, 0, 1]))
    assert a.shape == (10, 72, 128, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()
    assert a.max() > 200 and (a > 25).mean() < 0.5  # bright strokes on a mostly black background
    assert (a[0] != a[-1]).any()  # digits move


def test_dataset_cached_as_video_files(tmp_path: Path):
    cfg = _dataset("moving_digits", cache_dir=str(tmp_path), train_videos=2, val_videos=1, test_videos=1,
                   frames_per_video=20, clip_frames=8)
    clips = build_clips(cfg)
    assert [len(clips[s]) for s in ("train", "val", "test")] == [4, 2, 2]  # 20 frames -> 2 clips of 8
    path = Path(clips["train"][0].path)
    assert path.exists() and count_frames(path) == 20
    mtime = path.stat().st_mtime_ns
    assert build_clips(cfg) == clips and path.stat().st_mtime_ns == mtime  # cache hit, nothing rewritten


def test_clip_cutting_and_video_split():
    assert [(c.start, c.length) for c in cut_clips(0, "v", 50, 16, (64, 64))] == [(0, 16), (16, 16), (32, 16)]
    paths = [Path(f"v{i:02d}.mp4") for i in range(20)]
    a, b = split_videos(paths, [0.6, 0.2, 0.2], 3), split_videos(paths, [0.6, 0.2, 0.2], 3)
    assert a == b and [len(a[s]) for s in ("train", "val", "test")] == [12, 4, 4]
    assert not (set(a["train"]) & set(a["val"]) or set(a["train"]) & set(a["test"]) or set(a["val"]) & set(a["test"]))
    assert split_videos(paths, [0.6, 0.2, 0.2], 4) != a


def test_video_folder_clips_by_seconds(tmp_path: Path):
    for i in range(5):
        write_video(tmp_path / f"sub/clip_{i}.mp4", moving_square_frames(n=30), fps=10)
    cfg = _dataset("video_folder", path=str(tmp_path), clip_seconds=1.0, split_ratios=[0.6, 0.2, 0.2])
    clips = build_clips(cfg)
    assert {c.length for split in clips.values() for c in split} == {10}
    assert sum(len(v) for v in clips.values()) == 15
    videos = {s: {c.path for c in clips[s]} for s in clips}
    assert not videos["train"] & videos["test"]


def test_stream_reads_clips_sequentially_and_stains_deterministically(tmp_path: Path):
    cfg = _dataset("moving_digits", cache_dir=str(tmp_path), train_videos=2, val_videos=1, test_videos=1,
                   frames_per_video=16, clip_frames=8)
    clips = build_clips(cfg)
    ref = clips["val"][1]
    (got_ref, frames), = list(read_clips(ref.path, [ref]))
    full = np.stack(list(iter_frames(ref.path)))
    np.testing.assert_array_equal(frames, full[8:16])
    stain = CircularStain(20, 1.0, 0.8, 0.3)
    val = [list(StainedClipStream(clips["val"], stain, "val", 0, train=False)) for _ in range(2)]
    assert len(val[0]) == 2 and val[0][0]["stained"].shape == (8, 3, 72, 128)
    for a, b in zip(*val):
        assert (a["stained"] == b["stained"]).all()
    train = list(StainedClipStream(clips["train"], stain, "train", 0, train=True, context_frames=3, samples_per_clip=4,
                                   shuffle_buffer=5))
    assert len(train) == 4 * len(clips["train"])
    assert train[0]["stained"].shape == (3, 3, 72, 128) and train[0]["clean"].shape == (3, 72, 128)


def test_window_models_train_on_windows_with_their_scored_frames(tmp_path: Path):
    cfg = _dataset("moving_digits", cache_dir=str(tmp_path), train_videos=2, val_videos=1, test_videos=1,
                   frames_per_video=16, clip_frames=8, batch_size=6, samples_per_clip=3)
    datamodule = RestorationDataModule(cfg, CircularStain(20, 1.0, 0.8, 0.3), context_frames=1, window=6)
    datamodule.prepare_data()
    stream = datamodule.stream("train")
    samples = list(stream)
    assert len(samples) == len(stream) == len(datamodule.clips["train"])  # one window per clip
    for sample in samples:
        centres = sample["centres"].numpy()
        assert sample["stained"].shape == (6, 3, 72, 128) and sample["clean"].shape == (3, 3, 72, 128)
        assert len(set(centres)) == 3 and centres.min() >= 0 and centres.max() < 6 and (np.diff(centres) > 0).all()
        # the scored frames are the clean frames under the window's stained ones
        stained = sample["stained"][centres].float() / 255
        mask = sample["mask"][0]
        restored = ((stained - 0.3 * mask) / (1 - mask).clamp(min=1e-6)).clamp(0, 1)
        assert ((restored - sample["clean"].float() / 255).abs()[..., mask < 0.5] <= 2 / 255).all()
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["stained"].shape[:2] == (2, 6) and batch["centres"].shape == (2, 3)  # 6 scored frames: 2 windows of 3
    val = next(iter(datamodule.val_dataloader()))
    assert val["stained"].shape[1] == 8 and val["offset"].shape == (1, 3, 72, 128)  # evaluation: whole clips
