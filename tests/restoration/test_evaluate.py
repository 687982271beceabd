"""``python -m vidlab.restoration.evaluate`` on real video files and the session's tiny trained
checkpoint: reproducible stains, the oracle's margin over the input, and the command's exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidlab.restoration.evaluate import DEFAULT_LABEL, evaluate, main, report
from vidlab.restoration.footage import write_footage

from conftest import call_main, only_line


@pytest.fixture(scope="module")
def footage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("footage")
    write_footage(folder, videos=2, frames=12, fps=24, seed=0)  # H.264 .mp4 72x128, .mkv 90x160
    return folder


@pytest.fixture(scope="module")
def checkpoint(tiny_run: Path) -> str:
    return str(tiny_run / "outputs/run/checkpoints/best.ckpt")


def test_rows_are_reproducible_and_the_oracle_beats_the_input(footage: Path, checkpoint: str):
    rows = evaluate([footage], [checkpoint], frames=12, seed=0)
    assert [(r.video, r.output) for r in rows] == [
        (video, output) for video in ("scene_000.mp4", "scene_001.mkv")
        for output in ("input", "true_inverse", "inpaint_telea", checkpoint)
    ]
    assert {r.size for r in rows} == {"72x128"}
    assert [r.true_stain for r in rows[:4]] == [False, True, True, False]
    assert report(evaluate([footage], [checkpoint], frames=12, seed=0)) == report(rows)  # the same stains
    other = evaluate([footage], [], frames=12, seed=1)
    assert [r.psnr_stain for r in other if r.output == "input"] != [r.psnr_stain for r in rows if r.output == "input"]
    for video in ("scene_000.mp4", "scene_001.mkv"):
        score = {r.output: r for r in rows if r.video == video}
        assert score["true_inverse"].psnr_stain > score["input"].psnr_stain + 10
        assert score["input"].psnr_content_stain == score["input"].psnr_content_stain  # content there: not NaN


def test_cli_prints_and_writes_the_tables(footage: Path, checkpoint: str, tmp_path: Path):
    out = tmp_path / "table.md"
    outcome = call_main(lambda: main([str(footage / "scene_000.mp4"), "--model", checkpoint, "--frames", "6",
                                      "--size", "native", "--out", str(out)]))
    assert outcome.returncode == 0, outcome.stderr
    assert "## mean over videos (mean of per-video PSNR in dB)" in outcome.stdout
    assert f"gap to the ceiling ({checkpoint}): " in outcome.stdout
    assert out.read_text() == outcome.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.md"]  # no temporary left


@pytest.mark.parametrize(("args", "message"), [
    (["missing.mp4"], "error: not found: missing.mp4"),
    (["{footage}", "--size", "72by128"], "error: --size 72by128: expected HEIGHTxWIDTH (e.g. 72x128) or native"),
])
def test_bad_input_is_one_line_and_exit_2(footage: Path, args: list[str], message: str):
    outcome = call_main(lambda: main([a.format(footage=footage) for a in args]))
    assert (outcome.returncode, only_line(outcome.stderr)) == (2, message)


def test_videos_too_small_for_the_stain_are_skipped_with_a_note(footage: Path):
    outcome = call_main(lambda: main([str(footage), "--size", "40x64", "--frames", "2"]))
    notes = outcome.stderr.splitlines()
    assert outcome.returncode == 1 and len(notes) == 3, outcome.stderr
    assert notes[0].startswith("skipped ") and notes[0].endswith(
        "scene_000.mp4: radius 25 does not fit a 40x64 frame (needs 2*radius < 40)")
    assert notes[-1] == "error: no video could be scored (see the notes above)"


def test_without_a_model_the_shipped_one_is_scored_and_near_the_ceiling(footage: Path):
    rows = {(r.video, r.output): r for r in evaluate([footage], [DEFAULT_LABEL], frames=12)}
    for video in ("scene_000.mp4", "scene_001.mkv"):
        model, ceiling = rows[video, DEFAULT_LABEL], rows[video, "true_inverse"]
        assert model.psnr_stain > rows[video, "input"].psnr_stain + 10 and model.psnr_stain > ceiling.psnr_stain - 3.5
