"""The extraction loader (``VideoClipStream``) on real H.264 and MPEG-4 files: every thread plan gives
the batches of one thread, exact frames; its threads stop and are joined however the consumer stops;
a batch's array is reused only once nothing refers to it; the distinct frames, resized and gathered,
are the clips the model saw before; broken videos fail their rows, short ones pad theirs."""

import os
import threading
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
import torch
from torchvision.models.video import r3d_18

from vidlab.embeddings.backbones import weights_enum
from vidlab.embeddings.chunks import gather_clips, make_chunks, sample_indices
from vidlab.embeddings.clip_dataset import BatchArrays, VideoClipStream
from vidlab.embeddings.extraction import ReaderPlan, clip_loader, reader_plan
from vidlab.embeddings.preprocess import WeightsPreprocess
from vidlab.video import read_frames, write_video

from conftest import benchmarks_importable

T = 4
# every way extraction.num_workers can spread a rank's work (extraction.reader_plan), on 2 to 16 cores
PLANS = [ReaderPlan(0, False, 0), ReaderPlan(1, True, 0), ReaderPlan(1, False, 0), ReaderPlan(2, False, 1),
         ReaderPlan(3, False, 1)]


def _textured(n: int, size: tuple[int, int], seed: int) -> list[np.ndarray]:
    """Frames that differ in every pixel and from each other (a moving noise texture)."""
    base = np.random.default_rng(seed).integers(0, 256, (size[0], size[1] + n, 3), dtype=np.uint8)
    return [np.ascontiguousarray(base[:, t : t + size[1]]) for t in range(n)]


def _h264(path: Path, frames: list[np.ndarray], container: str | None = None) -> Path:
    """H.264 with B-frames and a long GOP (libx264), in ``container`` (None: by the suffix)."""
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream("libx264", rate=30)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.options = {"bf": "2", "g": "250"}
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    return path


def _table(clips: list[tuple[Path, int, int]]) -> pd.DataFrame:
    return pd.DataFrame({"row": range(len(clips)), "abs_path": [str(p) for p, _, _ in clips],
                         "start_frame": [s for _, s, _ in clips], "end_frame": [e for _, _, e in clips]})


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("stream videos")
    return {"a": _h264(folder / "a.mp4", _textured(70, (48, 64), 0)),
            "b": write_video(folder / "b.mp4", _textured(41, (48, 64), 1), 30),  # MPEG-4 part 2
            "c": _h264(folder / "c.mp4", _textured(33, (36, 52), 2))}


@pytest.fixture(scope="module")
def table(videos: dict[str, Path]) -> pd.DataFrame:
    """Overlapping 8-frame clips every 4 frames, as the index cuts them."""
    return _table([(videos[k], s, s + 8) for k, n in (("a", 70), ("b", 41), ("c", 33)) for s in range(0, n - 7, 4)])


def _batches(stream: VideoClipStream) -> dict[int, tuple[torch.Tensor, bool]]:
    """Row -> (its clip (T, C, H, W), padded), from every batch the stream yields."""
    out = {}
    for batch in clip_loader(stream, pin_memory=False):
        clips = gather_clips(batch["frames"], batch["clips"])
        for row, clip, padded in zip(batch["rows"].tolist(), clips, batch["padded"].tolist()):
            out[row] = (clip.clone(), padded)
    return out


def _no_reader_threads() -> bool:
    return not [t for t in threading.enumerate() if t.name.startswith("vidlab-reader")]


@pytest.mark.parametrize("plan", PLANS, ids=lambda p: f"readers={p.readers},apart={p.decode_apart}")
def test_every_thread_plan_gives_the_exact_sampled_frames(table: pd.DataFrame, plan: ReaderPlan):
    got = _batches(VideoClipStream(make_chunks(table, T, 3), None, "exact", *plan))
    assert sorted(got) == table.row.tolist()
    for row in table.itertuples():
        clip, padded = got[row.row]
        expected = read_frames(row.abs_path, sample_indices(row.start_frame, row.end_frame, T))
        assert not padded and clip.permute(0, 2, 3, 1).numpy().tobytes() == expected.tobytes()
    assert _no_reader_threads()


def test_resized_distinct_frames_gathered_are_the_resized_clips(table: pd.DataFrame):
    """The model sees what a stack of each clip's frames, resized, would give it: the same bytes, the
    same layout (a different layout may pick another kernel), the same embeddings."""
    preprocess = WeightsPreprocess(weights_enum("r3d_18", None))
    chunk = make_chunks(table, T, 3)[1]
    batch = next(iter(VideoClipStream([chunk], None)))
    ours = gather_clips(preprocess.spatial(batch["frames"]), batch["clips"])
    frames = [torch.from_numpy(read_frames(chunk.path, wanted)).permute(0, 3, 1, 2) for wanted in chunk.frames]
    stacked = preprocess.spatial(torch.cat(frames)).unflatten(0, (len(frames), T))
    assert torch.equal(ours, stacked) and preprocess.normalize(ours).stride() == preprocess.normalize(stacked).stride()
    torch.manual_seed(0)
    model = r3d_18().eval()
    with torch.inference_mode():
        assert torch.equal(model(preprocess.normalize(ours)), model(preprocess.normalize(stacked)))


@pytest.mark.parametrize("plan", PLANS[1:], ids=lambda p: f"readers={p.readers},apart={p.decode_apart}")
def test_an_error_in_a_reader_reaches_the_consumer_and_every_thread_stops(table: pd.DataFrame, plan: ReaderPlan):
    calls = []

    def spatial(frames: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("resize failed")
        return frames

    with pytest.raises(RuntimeError, match="resize failed"):
        _batches(VideoClipStream(make_chunks(table, T, 2), spatial, "exact", *plan))
    assert _no_reader_threads()


@pytest.mark.parametrize("plan", PLANS[1:], ids=lambda p: f"readers={p.readers},apart={p.decode_apart}")
def test_a_consumer_that_stops_early_stops_and_joins_the_readers(table: pd.DataFrame, plan: ReaderPlan):
    batches = iter(VideoClipStream(make_chunks(table, T, 1), None, "exact", *plan))
    next(batches)
    assert not _no_reader_threads()
    batches.close()  # what a signal, an error or a finished trainer does to the loader's iterator
    assert _no_reader_threads()


def test_a_batch_array_is_reused_only_once_nothing_refers_to_it():
    arrays = BatchArrays()
    first = arrays.take(6, (4, 5, 3))
    batch = torch.from_numpy(first).permute(0, 3, 1, 2)[1:]  # a view of a view, as a batch is handed on
    del first
    second = arrays.take(6, (4, 5, 3))
    assert second.ctypes.data != batch.untyped_storage().data_ptr()
    address = batch.untyped_storage().data_ptr()
    del batch
    assert arrays.take(5, (4, 5, 3)).ctypes.data == address  # free again: the same memory, no new pages


@pytest.mark.parametrize("plan", PLANS, ids=lambda p: f"readers={p.readers},apart={p.decode_apart}")
def test_broken_videos_fail_their_rows_and_the_rest_is_delivered(tmp_path: Path, videos: dict[str, Path],
                                                                 plan: ReaderPlan):
    """A file that is not a video, and a stream whose frame size changes mid-way (two H.264 streams
    joined: FFmpeg decodes both sizes), fail their rows with a reason naming the file."""
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video" * 100)
    joined = tmp_path / "joined.h264"
    joined.write_bytes(_h264(tmp_path / "p1.h264", _textured(20, (48, 64), 3), "h264").read_bytes()
                       + _h264(tmp_path / "p2.h264", _textured(20, (32, 48), 4), "h264").read_bytes())
    table = _table([(garbage, 0, 8), (joined, 0, 8), (joined, 16, 24), (videos["a"], 0, 8)])
    failed, delivered = {}, set()
    for batch in VideoClipStream(make_chunks(table, T, 1), None, "exact", *plan):
        if "failed_rows" in batch:
            failed.update({row: batch["reason"] for row in batch["failed_rows"].tolist()})
        else:
            delivered.update(batch["rows"].tolist())
    assert delivered == {1, 3}  # the first joined clip is whole before the size changes
    assert "garbage.mp4" in failed[0] and "joined.h264" in failed[2] and "64x48" in failed[2]


@pytest.mark.parametrize("plan", PLANS, ids=lambda p: f"readers={p.readers},apart={p.decode_apart}")
def test_a_video_shorter_than_its_index_pads_rows_with_its_last_frame(videos: dict[str, Path], plan: ReaderPlan):
    table = _table([(videos["c"], 24, 32), (videos["c"], 28, 40)])  # c has 33 frames: the second runs past the end
    got = _batches(VideoClipStream(make_chunks(table, T, 2), None, "exact", *plan))
    last = read_frames(videos["c"], [32])[0]
    assert [got[0][1], got[1][1]] == [False, True]
    wanted = sample_indices(28, 40, T)
    for clip_frame, index in zip(got[1][0].permute(0, 2, 3, 1).numpy(), wanted):
        assert np.array_equal(clip_frame, last if index > 32 else read_frames(videos["c"], [index])[0])


def test_the_quick_benchmark_prints_the_loaders_ratio_to_the_decode_ceiling(tmp_path: Path, capsys):
    """``benchmarks/extraction.py --quick`` shrunk as a user trying it would (shorter videos, three
    repetitions: the median of one ceiling-then-loader pair each, so a burst of the suite's other
    worker in one of them does not decide the row): a row per thread plan with its ratio, far above
    the process loader's 0.08-0.10."""
    with benchmarks_importable():
        from extraction import main

        main(["--quick", "--seconds", "6", "--reps", "3", "--data", str(tmp_path)])
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines() if "native size" in line]
    assert len(rows) == 2 and "1 reader" in rows[0][2] and "readers" in rows[1][2]
    assert all(float(row[4].strip(" *")) > 0.3 for row in rows)


def test_the_loader_table_puts_each_peer_beside_the_loader_on_the_same_frames(tmp_path: Path, capsys):
    """The loader table of ``benchmarks/extraction.py`` on a video set of another size (``codec@WxH``):
    videos of that size, the loader's row, then a row per peer asked for the same frames (its clips/s,
    ratio and pixel check) or, where the peer is not installed (CI), its reason. One process: a pool
    per core costs seconds to start, and the rows are made alike."""
    with benchmarks_importable():
        from extraction import PEERS, load_index, loader_table, make_videos, video_set, write_index

        codec, size = video_set("h264@176x144")
        assert (codec, size) == ("h264", (144, 176)) and video_set("mpeg4") == ("mpeg4", (240, 320))
        paths = make_videos(tmp_path, 2, 60, codec, size)
        assert read_frames(paths[0], [0]).shape == (1, 144, 176, 3)
        table = load_index(write_index(paths, tmp_path / "index.csv"), None)
        loader_table({1: table}, "small", 4, 1, peers=True)
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines() if line.startswith("| small")]
    assert rows[0][2].strip().startswith("vidlab loader, 1 reader") and float(rows[0][4].strip(" *")) > 0
    for name in PEERS:
        (mine,) = [row for row in rows if row[2].strip().startswith(name)]
        assert "not measured" in mine[3] or (float(mine[4].strip(" *")) > 0 and mine[6].strip() == "yes")


def test_the_reader_plan_spends_each_core_once():
    """Every core a reader by default; a reader beside a spare core decodes apart; FFmpeg's own
    threads only where cores are left over."""
    cores = len(os.sched_getaffinity(0))
    assert reader_plan(None, 1) == ReaderPlan(cores, False, 1)
    assert reader_plan(0, 1) == ReaderPlan(0, False, 0)
    assert reader_plan(None, 2 * cores) == ReaderPlan(1, False, 1)  # more devices than cores: one reader each
    assert reader_plan(1, 1) == ReaderPlan(1, cores >= 2, 0 if cores > 1 else 1)
