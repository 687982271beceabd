"""Real Hydra composition of the shipped configs, and clear errors for bad values."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from vidlab.choices import choice_values
from vidlab.errors import ConfigError
from vidlab.registry import build_node
from vidlab.restoration.config import validate
from vidlab.restoration.models.unet import UNetConfig

from conftest import ROOT, only_line, train

CONF = str(ROOT / "conf")


def composed(*overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("train", overrides=["paths.output_dir=/tmp/unused", *overrides])
    return cfg


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["experiment=temporal"],
        ["experiment=multi_stain"],
        ["debug=limit"],
        ["debug=fast_dev_run"],
        ["debug=overfit"],
        ["dataset=video_folder", "dataset.path=/data/videos"],
        ["corruption=none", "smoothing=ema", "scheduler=none", "logger=none", "trainer=gpu"],
        ["smoothing=window", "smoothing.kernel=box"],
        ["model=blend_unet"],
        ["model=blend_unet", "experiment=multi_stain", "model.context_frames=3"],
        ["model=blend_unet", "dataset=video_folder", "dataset.path=/data/videos", "dataset.clip_seconds=2"],
    ],
)
def test_every_shipped_config_composes_and_validates(overrides):
    spec = validate(composed(*overrides))
    assert spec.model.context_frames >= 1


def test_temporal_experiment_selects_multi_frame_model():
    spec = validate(composed("experiment=temporal"))
    assert spec.model.name == "unet_temporal" and spec.model.context_frames == 5
    assert spec.model.base_channels == choice_values("model", "unet")["base_channels"]


def test_seed_zero_is_kept():
    assert validate(composed("seed=0")).top.seed == 0


@pytest.mark.parametrize(
    "override,key",
    [
        ("model.base_channels=abc", "model.base_channels"),
        ("model.depth=0", "model.depth"),
        ("corruption.opacity=1.5", "corruption.opacity"),
        ("corruption.hardness=0", "corruption.hardness"),
        ("corruption.radius=40", "corruption"),
        ("smoothing=ema smoothing.alpha=2", "smoothing.alpha"),
        ("+model.colour=red", "model.colour"),
        ("dataset.batch_size=-1", "dataset.batch_size"),
        ("trainer.max_epochs=0", "trainer.max_epochs"),
        ("+trainer.max_epoch=3", "trainer.max_epoch"),
        ("model=blend_unet model.window=32", "model.window"),
        ("model=blend_unet model.min_gain=0", "min_gain"),
        ("loss.mask_weight=-1", "mask_weight"),
        ("compare_baselines=[true_inverse,median]", "compare_baselines"),
    ],
)
def test_bad_values_name_their_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(composed(*override.split()))


def test_bad_override_is_one_clear_line_before_any_work(tmp_path: Path):
    """train.py's own main (its process, exit 2 in about two seconds, is the README's command in test_readme.py)."""
    proc = train("model.base_channels=-3", f"paths.root={tmp_path}", f"hydra.run.dir={tmp_path}/out", check=False)
    assert proc.returncode == 2 and only_line(proc.stderr) == "config error: model.base_channels must be >= 1 (got -3)"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # Hydra's run folder, nothing of vidlab's


@pytest.mark.parametrize("script,overrides", [("train.py", ["model.base_channels=-3"]),
                                              ("train.py", ["task=probe", "embeddings=/x", "probe.max_iter=0"]),
                                              ("extract.py", ["stage=index", "layout.root=/x", "indexing.stride=0"])])
def test_a_config_error_is_answered_before_lightning_and_mlflow_load(tmp_path: Path, script: str, overrides: list[str]):
    """A refusal costs about two seconds (a model's schema lives beside its torch module, so checking
    one imports torch), not the ~12 s of importing Lightning and MLflow too."""
    import subprocess
    import sys

    code = (f"import sys, runpy; sys.argv = {[script, *overrides, f'hydra.run.dir={tmp_path}']!r}\n"
            f"try:\n    runpy.run_path({str(ROOT / script)!r}, run_name='__main__')\nexcept SystemExit as e:\n"
            "    print(e.code, sorted(m for m in ('lightning', 'mlflow') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split("\n")[0] == "2 []", proc.stdout + proc.stderr[-2000:]


def test_defaults_live_in_the_yaml_only():
    """No schema carries a second copy of a default: a choice's YAML missing a key is an error, not a
    silent fallback (TrainerConfig's None means "left to Lightning")."""
    import dataclasses

    from vidlab.embeddings.config import ExtractionConfig, IndexCheckConfig, IndexConfig
    from vidlab.help import registries
    from vidlab.restoration.config import FIXED_SCHEMAS, TopLevelConfig

    schemas = {*FIXED_SCHEMAS.values(), TopLevelConfig, ExtractionConfig, IndexCheckConfig, IndexConfig,
               *(entry.schema for registry in registries() for entry in registry.entries())}
    for schema in schemas:
        with_default = [f.name for f in dataclasses.fields(schema)
                        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING]
        assert not with_default, f"{schema.__name__} has defaults for {with_default}; they belong in conf/"
    with pytest.raises(ConfigError, match="model.depth: no value"):
        build_node("model", UNetConfig, {k: v for k, v in choice_values("model", "unet").items() if k != "depth"})


@pytest.mark.parametrize("backbone", sorted(p.stem for p in (ROOT / "conf/backbone").glob("*.yaml")))
def test_every_backbone_config_validates(backbone):
    from vidlab.embeddings.config import validate_extract

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("extract", overrides=["paths.output_dir=/tmp/unused", f"backbone={backbone}",
                                            "index=/data/i.csv"])
    spec = validate_extract(cfg)
    assert spec.backbone.name == backbone and spec.stage == "extract"


@pytest.mark.parametrize("overrides", [["hydra/launcher=submitit_slurm", "trainer=ddp"], ["hydra/launcher=joblib"],
                                       ["hparams_search=restoration_optuna"]])
def test_cluster_and_sweep_configs_compose(overrides):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("train", overrides=["paths.output_dir=/tmp/unused", *overrides], return_hydra_config=True)
    spec = validate(cfg)
    if "trainer=ddp" in overrides:
        assert cfg.trainer.strategy == "ddp" and spec.trainer.accelerator == "gpu"
        assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    if "hparams_search=restoration_optuna" in overrides:
        assert cfg.hydra.sweeper.direction == "maximize" and "optimizer.lr" in cfg.hydra.sweeper.params


def test_probe_search_config_composes():
    from vidlab.probe.config import validate_probe

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("train", overrides=["paths.output_dir=/tmp/unused", "task=probe", "embeddings=/x",
                                          "hparams_search=probe_optuna"], return_hydra_config=True)
    spec = validate_probe(cfg)
    assert (spec.optimized_metric == "val/roc_auc" and spec.probe.name == "mlp"
            and "optimizer.lr" in cfg.hydra.sweeper.params)
