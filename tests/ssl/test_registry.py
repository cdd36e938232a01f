"""The method registry: every place that names the pretraining methods agrees with it, and a
method is added by registering it in its own package."""

from __future__ import annotations

import subprocess
import sys
import typing

import pytest

from medssl.ssl import registry
from medssl.ssl.config import PretrainConfig

SHARED_SECTIONS = {"model", "data", "views", "train"}


def test_every_listing_of_the_methods_is_the_registry():
    from medssl.pipeline import PretrainStage
    from medssl.ssl.pretrain import METHODS

    names = registry.method_names()
    assert names[:2] == ("mae", "s3d")  # the order of the CLI's help and messages
    assert set(names) == {"mae", "s3d", "contrastive", "graphmatch"}
    # the pipeline's typed key
    pipeline = typing.get_args(PretrainStage.model_fields["method"].annotation)
    assert sorted(pipeline) == sorted(names), "pipeline pretrain.method lists other methods"
    assert PretrainStage().method in names
    # the recipe's method sections
    recipe = set(PretrainConfig.model_fields) - SHARED_SECTIONS
    assert recipe == set(registry.sections())
    assert {registry.get(n).section for n in names} == recipe
    assert names == METHODS


def test_the_cli_offers_the_registered_methods(medssl, tmp_path):
    r = medssl("pretrain", "--help")
    assert r.code == 0, r.output
    help_text = " ".join(r.stdout.split())
    for spec in registry.methods():
        assert f"{spec.name} ({spec.summary})" in help_text
    r = medssl("pretrain", "-m", "vae", "-o", tmp_path / "run")
    assert r.code == 2
    assert f"--method must be one of {', '.join(registry.method_names())}, got" in r.stderr


def test_each_method_builds_its_stages_and_has_default_settings():
    for spec in registry.methods():
        assert callable(spec.build)
        if spec.settings is not None:  # its defaults are the recipe's
            assert getattr(PretrainConfig(), spec.section) == spec.settings()


def test_a_name_or_section_is_registered_once():
    mae = registry.get("mae")
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(mae)
    other = registry.MethodSpec("vae", "x", 9, mae.build, "mae", registry.Section)
    with pytest.raises(ValueError, match="different models"):
        registry.register(other)
    assert "vae" not in registry.method_names()
    with pytest.raises(KeyError, match="choose one of mae, s3d"):
        registry.get("vae")


# a new method, as its package's spec module would register it (run in a fresh interpreter:
# the recipe is built from the registry once, at import)
NEW_METHOD = """
from pydantic import Field
from medssl.ssl import registry

class ToySection(registry.Section):
    width: int = Field(3, ge=1)

registry.methods()  # the shipped ones first
registry.register(registry.MethodSpec("toy", "a toy", 9, lambda ctx: [], "toy", ToySection))

from medssl.ssl.config import load_config
from medssl.ssl.settings import PretrainSettings
from medssl.cli.pretrain import pretrain

cfg = load_config({"toy": {"width": 5}})
assert cfg.toy.width == 5 and list(cfg.model_fields)[-3:] == ["toy", "views", "train"]
assert PretrainSettings.from_options("toy").method == "toy"
assert "toy (a toy)" in registry.describe()
print("ok")
"""


def test_registering_a_method_is_all_it_takes():
    proc = subprocess.run(
        [sys.executable, "-c", NEW_METHOD], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_the_registry_and_recipes_load_without_torch():
    code = (
        "import sys; from medssl.ssl.config import load_config; from medssl.ssl import registry;"
        "import medssl.cli.pretrain; registry.methods(); load_config({'mae': {'block_size': 8}});"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("package", ["mae3d", "contrastive", "graphmatch"])
def test_a_method_package_exports_each_name_from_where_it_is_defined(package):
    import importlib

    mod = importlib.import_module(f"medssl.ssl.{package}")
    assert sorted(mod.__all__) == dir(mod) == sorted(mod._WHERE)
    for name in mod.__all__:
        assert getattr(mod, name) is vars(importlib.import_module(mod._WHERE[name]))[name]
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        mod.nothing  # noqa: B018
