"""The registries (timm's way: tests generated from what is registered): every registered choice has
its YAML in ``conf/``, validates from it, builds and works; ``--help`` and the README's group table
list exactly what is registered; a class that clashes or derives from the wrong base is refused; a
model pickled under its 0.3 path loads. docs/extending.md's recipes are performed in test_extending.py."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from vidlab.choices import conf_dir
from vidlab.errors import ConfigError
from vidlab.help import registries
from vidlab.registry import REGISTRIES, Registry
from vidlab.restoration.corruption import CORRUPTIONS, Corruption, Stain, StainLayer
from vidlab.schema import Choice, require

from conftest import ROOT

ENTRIES = [(registry.group, name) for registry in registries() for name in registry.names()]
TASK_OF = {"probe": ["task=probe", "embeddings=unused"], "backbone": ["index=unused.csv"],
           "layout": ["stage=index", "layout.root=unused"]}
REQUIRED = {("dataset", "video_folder"): ["dataset.path=/videos"]}  # what the user must say (??? in the YAML)


def composed_node(group: str, name: str) -> dict:
    """Group ``group`` of the config ``train.py`` (or ``extract.py``) composes with ``group=name``."""
    from hydra import compose, initialize_config_dir

    from vidlab.schema import resolved

    script = "extract" if group in ("backbone", "layout") else "train"
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(script, overrides=[*TASK_OF.get(group, []), f"{group}={name}", *REQUIRED.get((group, name), []),
                                                  "paths.output_dir=unused"])
    return resolved(cfg, group)


def test_every_config_group_of_a_registry_has_exactly_its_choices():
    for registry in registries():
        assert (sorted(p.stem for p in (conf_dir() / registry.group).glob("*.yaml"))
                == sorted(registry.names())), registry.group


@pytest.mark.parametrize("group,name", ENTRIES)
def test_every_registered_choice_validates_from_its_yaml_and_builds(group: str, name: str):
    registry = REGISTRIES[group]
    entry = registry[name]
    cfg = registry.config(composed_node(group, name))
    assert type(cfg) is entry.schema and cfg.name == name and entry.summary
    if entry.target is not None and group not in ("dataset", "backbone", "layout"):  # their targets read files
        built = registry.build(cfg)
        assert isinstance(built, entry.target)


@pytest.mark.parametrize("name", CORRUPTIONS.names())
def test_every_corruption_draws_a_static_stain_that_fits(name: str):
    corruption = CORRUPTIONS.build(CORRUPTIONS.from_conf(name))
    corruption.check_frame(64, 96)
    stain = corruption.sample(np.random.default_rng(0), 64, 96)
    clean = np.random.default_rng(1).integers(0, 256, (3, 64, 96, 3), dtype=np.uint8)
    stained = stain.apply(clean)
    assert stained.shape == clean.shape and stained.dtype == np.uint8
    assert (stain.mask > 0).any() == corruption.stains
    still = stain.apply(np.repeat(clean[:1], 3, axis=0))  # static: the same frame is stained the same on every frame
    assert (still == still[:1]).all() and np.array_equal(still[0], stained[0])
    assert np.array_equal(stain.apply(clean), stained)  # and the same on every application
    if corruption.stains:
        with pytest.raises(ValueError):
            corruption.check_frame(8, 8)


@pytest.mark.parametrize("name", REGISTRIES["model"].names())
def test_every_model_restores_a_clip_and_trains_on_a_batch(name: str):
    """Through the interface the LightningModule and restore call: no code outside knows the class."""
    from vidlab.restoration.nets import MODELS

    node = composed_node("model", name)
    if "stain" in node:  # the default corruption's disc, made to fit these small frames
        node["stain"]["radius"] = 8
    net = MODELS.build(MODELS.config(node))
    clip = torch.rand(net.window or 5, 3, 32, 48)
    restored = net.restore(clip, np.arange(len(clip)), batch=4)
    assert restored.shape == clip.shape and 0 <= restored.min() and restored.max() <= 1
    mask = torch.zeros(2, 1, 32, 48)
    mask[:, :, 8:24, 16:32] = 0.5
    if net.window is None:
        batch = {"stained": torch.rand(2, net.context_frames, 3, 32, 48), "clean": torch.rand(2, 3, 32, 48),
                 "mask": mask}
    else:
        batch = {"stained": torch.rand(2, net.window, 3, 32, 48), "clean": torch.rand(2, 2, 3, 32, 48), "mask": mask,
                 "centres": torch.tensor([[0, 5], [3, 9]])}
    out = net.training_output(batch)
    assert out.restored.shape == out.clean.shape and out.mask.shape[0] == out.restored.shape[0]
    (out.restored - out.clean).abs().mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())  # something learns from it


def test_help_lists_every_registered_choice_with_what_it_is():
    from vidlab.help import choices_text

    text = choices_text()
    for registry in registries():
        assert f"{registry.group}: {', '.join(registry.names())}" in text
        for entry in registry.entries():
            assert f"    {entry.name:<16}{entry.summary}" in text


def test_the_readme_group_table_names_every_group_and_only_registered_choices():
    """The README shows the groups and the built-in choices with what they are; a choice added by
    docs/extending.md's recipes is listed by ``train.py --help`` (generated) and need not be added
    there, but the README never names one that is gone."""
    section = (ROOT / "README.md").read_text().split("## Config groups", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \|", section, re.MULTILINE)
    table = {group: set(re.findall(r"`(\w+)`", choices)) for group, choices in rows}
    assert table.keys() == {registry.group for registry in registries()}
    for registry in registries():
        assert table[registry.group] and table[registry.group] <= set(registry.names()), registry.group


# ---------------------------------------------------------------- a class for the registries' refusals
@dataclass
class SquareStainConfig(Choice):
    """A square blotch of one opacity."""

    side: int
    opacity: float
    tint: float

    def __post_init__(self) -> None:
        require(self.side >= 1, f"side must be >= 1 (got {self.side})")
        require(0 < self.opacity <= 1, f"opacity must be in (0, 1] (got {self.opacity})")


class SquareStain(Corruption):
    """A square blotch at a random place, the same on every frame of a clip."""

    def __init__(self, side: int, opacity: float, tint: float):
        self.side, self.opacity, self.tint = side, opacity, tint

    def check_frame(self, height: int, width: int) -> None:
        if self.side >= min(height, width):
            raise ValueError(f"side {self.side} does not fit a {height}x{width} frame")

    def sample(self, rng: np.random.Generator, height: int, width: int) -> Stain:
        top, left = rng.integers(0, height - self.side), rng.integers(0, width - self.side)
        mask = np.zeros((height, width), np.float32)
        mask[top : top + self.side, left : left + self.side] = self.opacity
        return Stain((StainLayer(mask, self.tint),), height, width)


def test_a_yaml_whose_class_is_not_registered_says_how_to_register_it():
    choices = re.escape(", ".join(CORRUPTIONS.names()))  # from the registry: a new corruption changes no test
    with pytest.raises(ConfigError, match=rf"^corruption.name: unknown choice 'nope' here \(choose one of {choices}; "
                                          r"a new choice's class registers itself with @CORRUPTIONS.register\)$"):
        CORRUPTIONS.config({"name": "nope"})
    with pytest.raises(ConfigError, match=r"^corruption.name: missing"):
        CORRUPTIONS.config({"radius": 3})


def test_a_second_registry_for_a_group_or_a_clashing_name_is_refused():
    with pytest.raises(ValueError, match="exists already"):
        Registry("corruption")
    with pytest.raises(ValueError, match="registered already"):
        CORRUPTIONS.register(CORRUPTIONS.names()[0], SquareStainConfig)(SquareStain)


def test_a_schema_that_does_not_derive_from_its_groups_base_is_refused_when_it_registers():
    """A model whose schema derives from ``Choice`` would pass the config check and crash later where the
    task reads ``context_frames``: it is refused at the decorator, saying which base."""
    from vidlab.restoration.nets import MODELS

    with pytest.raises(TypeError, match=r"^model.square: its schema SquareStainConfig must derive from "
                                        r"vidlab.restoration.nets.ModelConfig, which the model group's task reads$"):
        MODELS.register("square", SquareStainConfig)(SquareStain)
    assert "square" not in MODELS.names()


def test_a_model_pickled_under_its_03_module_path_still_loads():
    """MLflow models of 0.3 pickle their classes by module path; the models moved into the package
    that the registry discovers, and the old paths still name the same classes."""
    import pickle

    from vidlab.restoration.models.unet import UNet

    net = UNet(context_frames=1, depth=1, base_channels=2, norm="batch", mask_channel=False, residual=True)
    saved = pickle.dumps(net, protocol=0).replace(b"vidlab.restoration.models.unet\n", b"vidlab.restoration.unet\n")
    assert b"vidlab.restoration.unet\n" in saved
    loaded = pickle.loads(saved)
    assert type(loaded) is UNet and all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(),
                                                                          net.state_dict().values()))
