"""The package's shape: one registry of methods, an import graph without circles, no private imports.

These guard the layering README's "Architecture" section describes: models <- methods <- train /
memory <- bench / claims <- notebooks / CLI, with ``peftbook.methods.METHODS`` the one list of methods.
"""
from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest

import peftbook
from peftbook.methods import ALL_METHODS, METHODS, TRAINABLE_METHODS, get_method, make_config, method_defaults
from peftbook.train import OPTIMIZERS

pytestmark = pytest.mark.unit
ROOT = Path(peftbook.__file__).parent


def module_sources() -> dict[str, Path]:
    """``peftbook.x.y`` -> its file, for every module of the package."""
    return {".".join(("peftbook", *f.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__"): f
            for f in ROOT.rglob("*.py")}


def imports_of(path: Path, modules: dict) -> list[tuple[str, str]]:
    """(module imported, name imported or "") for every peftbook import in the file, functions included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, "") for a in node.names if a.name.split(".")[0] == "peftbook"]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level and node.module.startswith("peftbook"):
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.append((submodule, "") if submodule in modules else (node.module, alias.name))
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_sources()
    return {name: {m for m, _ in imports_of(path, modules) if m in modules and m != name}
            for name, path in modules.items()}


def test_the_import_graph_has_no_circle():
    graph = import_graph()
    for module in graph:
        seen, todo = set(), list(graph[module])
        while todo:  # everything ``module`` reaches must not reach it back
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo += graph[name]
        assert module not in seen, f"{module} imports itself back through {sorted(seen & set(graph))}"


# The layers of README's "Architecture" section, bottom first: a module imports from its own layer or below.
LAYERS = (
    ("peftbook.errors", "peftbook.precision", "peftbook.models", "peftbook.hub", "peftbook.zoo", "peftbook.surgery",
     "peftbook.environment", "peftbook.progress"),
    ("peftbook.tasks", "peftbook.batching", "peftbook.lm_loss", "peftbook.metrics", "peftbook.evaluate", "peftbook.spectrum",
     "peftbook.stats"),
    ("peftbook.methods",),
    ("peftbook.train", "peftbook.memory"),
    ("peftbook.bench", "peftbook.results", "peftbook.plots", "peftbook.claims", "peftbook.tiny", "peftbook.coverage",
     "peftbook.realmodel"),
    ("peftbook.commands", "peftbook.__main__", "peftbook.notebooks", "peftbook.notebook_checks", "peftbook.nbclean"),
)


def layer_of(module: str) -> int:
    for index, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    return len(LAYERS)  # the package root, which re-exports the public API


def test_every_module_imports_only_its_layer_or_below():
    graph = import_graph()
    assert all(layer_of(m) < len(LAYERS) for m in graph if m != "peftbook"), "a module outside every layer"
    upward = sorted(f"{m} -> {d}" for m, imported in graph.items() for d in imported if layer_of(d) > layer_of(m))
    assert upward == []


def test_only_the_cli_and_notebooks_import_the_package_root():
    graph = import_graph()
    importers = sorted(name for name, imported in graph.items() if "peftbook" in imported)
    assert importers == [], f"these modules import the package root `peftbook`: {importers}"


def test_no_module_imports_a_private_name_of_another():
    modules = module_sources()
    private = [(name, f"{module}.{imported}") for name, path in modules.items()
               for module, imported in imports_of(path, modules) if imported.startswith("_")]
    assert private == []


def test_the_method_names_are_listed_once():
    """Nothing outside the registry spells out a list of methods (three names or more in a row)."""
    name = "[\"'](" + "|".join(ALL_METHODS) + ")[\"']"
    listing = re.compile(rf"{name}\s*,\s*{name}\s*,\s*{name}")
    found = [str(path.relative_to(ROOT)) for path in ROOT.rglob("*.py")
             if path != ROOT / "methods" / "__init__.py" and listing.search(path.read_text())]
    assert found == []


@pytest.mark.parametrize("name", ALL_METHODS)
def test_every_registry_entry_is_complete(name):
    method = METHODS[name]
    assert method.name == name and method.config.method == name
    assert dataclasses.is_dataclass(method.config)
    method.config().validate()  # the defaults are valid
    config = make_config(name, **method_defaults(name)["config"])
    config.validate()
    for task_defaults in method.task_overrides.values():
        make_config(name, **{**method.defaults, **task_defaults.get("config", {})}).validate()
    if method.trains:
        assert method.lr > 0
        for function in ("inject", "adapter_state", "load_adapter_state", "num_trainable"):
            assert callable(getattr(method.module, function, None)), f"{name} has no {function}()"
        for field in (method.memory.input_tokens_field, method.memory.kv_tokens_field, method.memory.top_layers_field):
            assert field is None or hasattr(config, field), f"{name}: no config field {field!r}"
        assert method.memory.linear_inputs in ("none", "targets", "all")
        assert method.cuda_optimizer in OPTIMIZERS and method.cuda_optimizer != "auto"
    else:
        assert not hasattr(method.module, "inject")


def test_registry_lookups_name_what_is_allowed():
    assert TRAINABLE_METHODS == tuple(m for m in ALL_METHODS if m != "few_shot")
    with pytest.raises(ValueError, match="unknown method 'dora'; known: few_shot, prompt_tuning"):
        get_method("dora")
    with pytest.raises(ValueError, match="trains nothing"):
        peftbook.apply(None, make_config("few_shot"))
    with pytest.raises(ValueError, match="not the class LoRAConfig: write LoRAConfig()"):
        peftbook.apply(None, peftbook.LoRAConfig)
    with pytest.raises(ValueError, match="'lora' is not a method config; use one of PromptTuningConfig"):
        peftbook.apply(None, "lora")


@pytest.mark.parametrize("name", [m for m in ALL_METHODS if METHODS[m].hf_peft is not None])
def test_hf_peft_builders_make_the_same_sizes(name):
    pytest.importorskip("peft")
    from conftest import make_tiny_model

    model = make_tiny_model("llama")
    config = make_config(name, **method_defaults(name)["config"])
    peft_config = METHODS[name].hf_peft(model, config)
    for ours, theirs in (("num_virtual_tokens", "num_virtual_tokens"), ("adapter_len", "adapter_len"),
                         ("rank", "r"), ("alpha", "lora_alpha")):
        if hasattr(config, ours):
            assert getattr(peft_config, theirs) == getattr(config, ours), (name, ours)
    if hasattr(config, "adapter_layers"):  # ours may be a fraction of the depth; PEFT's is the count it means
        from peftbook.methods.llama_adapter import layer_count

        assert peft_config.adapter_layers == layer_count(config, model.config.num_hidden_layers)
