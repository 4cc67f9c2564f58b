"""One plugin shape: every registry's declarations, read from the source without importing it, agree with the
objects once imported; validating a config imports neither torch nor Lightning; a job's code is an import closure."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from physiossl.augment import AUDIO_TRANSFORMS, TRANSFORMS
from physiossl.codedeps import closure, code_files
from physiossl.data.sources import SOURCES, demo_options, get_source, source_kind
from physiossl.diskcache import DiskCache
from physiossl.methods import METHODS
from physiossl.models import ENCODERS, SLEEP_MODELS
from physiossl.registry import EMPTY, NOT_LITERAL, UnknownPlugin, _declared
from physiossl.variants import VARIANTS, variant_names

REPO = Path(__file__).resolve().parents[1]
REGISTRIES = [METHODS, ENCODERS, SLEEP_MODELS, TRANSFORMS, AUDIO_TRANSFORMS, SOURCES, VARIANTS]


def _plugins():
    return [(registry, name) for registry in REGISTRIES for name in registry.names()]


@pytest.mark.parametrize("registry,name", _plugins(), ids=lambda x: getattr(x, "kind", x))
def test_declarations_read_from_source_match_the_imported_objects(registry, name):
    plugin = registry[name]
    obj = plugin.load()
    assert obj.plugin_name == name
    for key, value in plugin.attrs.items():
        if key == "method_name":       # set by the methods' register
            continue
        assert value != NOT_LITERAL, f"{registry.kind} {name}: attribute {key} is not a literal"
        actual = getattr(obj, key)
        assert value == actual or (isinstance(actual, (list, tuple)) and list(value) == list(actual)), (
            key, value, actual)
    signature = inspect.signature(obj.__init__ if inspect.isclass(obj) else obj).parameters
    names = [n for n in signature if n != "self" and signature[n].kind not in (inspect.Parameter.VAR_KEYWORD,
                                                                                 inspect.Parameter.VAR_POSITIONAL)]
    assert list(plugin.params) == names
    for key, default in plugin.params.items():
        expected = signature[key].default
        if default == EMPTY:
            assert expected is inspect.Parameter.empty, key
        elif default != NOT_LITERAL:
            assert default == expected, (key, default, expected)


def test_every_kind_has_its_plugins():
    assert {"simclr", "byol", "swav", "moco_v2", "moco_v3", "cpc", "simper", "barlow_twins", "simsiam", "mpc",
            "apc"} <= set(METHODS.names())
    assert ENCODERS.names() == ["cpc", "xresnet1d101", "xresnet1d50"]
    assert SLEEP_MODELS.names() == ["sleepformer", "soundsleepnet"]
    assert variant_names() == ["supervised", "sc", "ssc", "both", "ccssl"]
    assert {n: source_kind(n) for n in SOURCES.names()} == {
        "chapman": "ecg", "cinc2020": "ecg", "code15": "ecg", "codetest": "ecg", "ptbxl": "ecg",
        "home_audio": "sleep", "psg_audio": "sleep"}
    assert get_source("ptbxl").__name__ == "physiossl.data.ecg.sources.ptbxl"
    assert demo_options("code15") == ["n_parts"] and demo_options("ptbxl") == []
    assert "level_param" in TRANSFORMS["gaussian_noise"].attrs


def test_unknown_names_are_key_and_value_errors_that_list_the_choices():
    with pytest.raises(UnknownPlugin, match=r"unknown sleep-staging variant 'fixmatch' \(available: \['both'"):
        VARIANTS["fixmatch"]
    for error in (KeyError, ValueError):
        with pytest.raises(error):
            METHODS.load("dino")


def test_a_declaration_is_read_from_source(tmp_path):
    path = tmp_path / "plugin.py"
    path.write_text(textwrap.dedent('''
        from torch import nn   # never imported by the reader
        class Base(nn.Module):
            kind = "base"
            def __init__(self, a, b=2): ...
        @register("mine", extra=[1, 2])
        class Mine(Base):
            schema = {"properties": {"x": {"default": 1}}}
        @register("fn")
        def build(in_channels=12, *, width=8): ...
        def helper(): ...
    '''))
    plugins = {p.name: p for p in _declared("thing", "physiossl.nowhere", path)}
    assert set(plugins) == {"mine", "fn"}
    assert plugins["mine"].info == {"extra": [1, 2]} and plugins["mine"].object == "Mine"
    assert plugins["mine"].attrs == {"kind": "base", "schema": {"properties": {"x": {"default": 1}}}}
    assert plugins["mine"].params == {"a": EMPTY, "b": 2}
    assert plugins["fn"].params == {"in_channels": 12, "width": 8}
    path = tmp_path / "bad.py"
    path.write_text("NAME = 'x'\n@register(NAME)\nclass A: ...\n")
    with pytest.raises(ValueError, match="not a string literal"):
        _declared("thing", "physiossl.nowhere", path)


def test_validating_the_shipped_configs_imports_neither_torch_nor_lightning():
    code = textwrap.dedent(f'''
        import sys
        from pathlib import Path
        from physiossl.config import load_config
        for path in sorted(Path({str(REPO / "config")!r}).glob("*.yaml")):
            load_config(path)
        heavy = sorted(m for m in ("torch", "lightning", "wfdb", "h5py") if m in sys.modules)
        print(",".join(heavy))
    ''')
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_jobs_that_do_not_train_import_no_lightning():
    """demo, download, convert, convert-sleep and the reports: every module of their code (the import closure, with
    the modules that functions import) imports without Lightning (and the data commands without torch)."""
    from physiossl.codedeps import closure

    data = sorted(closure(*(SOURCES[name].module for name in SOURCES)))
    report = sorted(closure("physiossl.stages.report"))
    code = textwrap.dedent(f'''
        import importlib, sys
        for module in {data!r}:
            importlib.import_module(module)
        print(",".join(m for m in ("torch", "lightning") if m in sys.modules))
        for module in {report!r}:
            importlib.import_module(module)
        print(",".join(m for m in ("lightning",) if m in sys.modules))
    ''')
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["", ""], out


def test_check_config_runs_without_torch_and_deep_runs_the_method_checks(tmp_path):
    import yaml

    config = yaml.safe_load((REPO / "config" / "demo_periodic.yaml").read_text())
    simper = config["pretrain"]["methods"]["simper"]
    simper["crop_s"] = simper["view_s"] * 0.5          # shorter than a view at the highest speed
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = [sys.executable, "-c", "import sys; from physiossl.cli import main; code = main(sys.argv[1:]); "
           "print('torch' in sys.modules); sys.exit(code)"]
    light = subprocess.run([*cli, "check-config", str(path)], capture_output=True, text=True)
    assert light.returncode == 0 and light.stdout.strip().endswith("False"), light.stdout + light.stderr
    deep = subprocess.run([*cli, "check-config", "--deep", str(path)], capture_output=True, text=True)
    assert deep.returncode == 2 and "pretrain.methods.simper.crop_s" in deep.stderr, deep.stderr


def test_code_inputs_are_import_closures():
    sleep = closure("physiossl.stages.sleep", VARIANTS["both"].module, SLEEP_MODELS["soundsleepnet"].module)
    assert {"physiossl.variants.both", "physiossl.variants.base", "physiossl.models.sleep", "physiossl.augment.audio",
            "physiossl.losses.sequential_consistency", "physiossl.data.sleep.store"} <= sleep
    assert not {m for m in sleep if m.startswith(("physiossl.methods.", "physiossl.report."))}
    assert "physiossl.models.xresnet1d" not in sleep and "physiossl.variants.ccssl" not in sleep
    pretrain = closure("physiossl.stages.pretrain", METHODS["simclr"].module, ENCODERS["xresnet1d50"].module)
    assert {"physiossl.methods.base", "physiossl.losses.nt_xent", "physiossl.augment.ecg"} <= pretrain
    assert "physiossl.methods.byol" not in pretrain and "physiossl.models.cpc" not in pretrain
    files = code_files("physiossl.stages.report")
    assert "src/physiossl/report/sleep.py" in files and "src/physiossl/__init__.py" in files


def test_code_version_follows_the_contents_of_the_closure(monkeypatch):
    from physiossl import codedeps

    report = ("physiossl.stages.report",)
    version = codedeps.code_version(*report)
    assert codedeps.files_of(version) == code_files(*report) and codedeps._code_version.__wrapped__(report) == version
    real = codedeps._file_digest
    # an edit of a file of the closure is another version; an edit of a file outside it is not
    monkeypatch.setattr(codedeps, "_file_digest", lambda p: "x" if p.parts[-2:] == ("report", "sleep.py") else real(p))
    assert codedeps._code_version.__wrapped__(report) != version
    monkeypatch.setattr(codedeps, "_file_digest", lambda p: "x" if p.name == "byol.py" else real(p))
    assert codedeps._code_version.__wrapped__(report) == version
    with pytest.raises(KeyError, match="no code version"):
        codedeps.files_of("0" * 64)


def test_remembered_imports_are_those_parsed_and_keyed_by_source(tmp_path, monkeypatch):
    from physiossl import codedeps

    modules = ["physiossl.stages.report", "physiossl.data.ecg.sources.code15", "physiossl.stages.sleep"]
    parsed = {m: codedeps.imports_of.__wrapped__(m) for m in modules}            # cold: parses every module
    cache = DiskCache("imports.json", tmp_path / "imports.json")
    monkeypatch.setattr(codedeps, "CACHE", cache)
    assert {m: codedeps.imports_of.__wrapped__(m) for m in modules} == parsed
    assert cache.new == len(modules)
    cache.save()
    warm = DiskCache("imports.json", tmp_path / "imports.json")
    monkeypatch.setattr(codedeps, "CACHE", warm)
    monkeypatch.setattr(codedeps, "_parse_imports", lambda *a: pytest.fail("parsed although remembered"))
    assert {m: codedeps.imports_of.__wrapped__(m) for m in modules} == parsed and warm.new == 0
    # another source (an edit) or another file list (a new module) is another key: parsed again
    monkeypatch.setattr(codedeps, "_tree_listing", lambda: "a different tree")
    with pytest.raises(pytest.fail.Exception, match="parsed although remembered"):
        codedeps.imports_of.__wrapped__(modules[0])
    (tmp_path / "imports.json").write_text("{not json")                          # a damaged cache: parse again
    assert DiskCache("imports.json", tmp_path / "imports.json").get("anything") is None


def test_remembered_plugins_are_those_read_from_source_and_keyed_by_the_package(tmp_path, monkeypatch):
    from physiossl import registry

    kinds = [METHODS, ENCODERS, SLEEP_MODELS, VARIANTS, SOURCES]
    read = {r.kind: r._read() for r in kinds}
    cache = DiskCache("plugins.json", tmp_path / "plugins.json")
    monkeypatch.setattr(registry, "CACHE", cache)
    assert {r.kind: registry.Registry.plugins.__wrapped__(r) for r in kinds} == read and cache.new == len(kinds)
    cache.save()
    warm = DiskCache("plugins.json", tmp_path / "plugins.json")
    monkeypatch.setattr(registry, "CACHE", warm)
    monkeypatch.setattr(registry, "_declared", lambda *a: pytest.fail("read although remembered"))
    remembered = {r.kind: registry.Registry.plugins.__wrapped__(r) for r in kinds}
    assert remembered == read and warm.new == 0
    # the same values and types, tuples and the markers of unreadable defaults included
    assert repr(remembered) == repr(read) and registry.NOT_LITERAL in repr(read)
    # another package (an edit anywhere in it) is another key: read again
    monkeypatch.setattr(registry, "_package_at_start", lambda: "another package")
    with pytest.raises(pytest.fail.Exception, match="read although remembered"):
        registry.Registry.plugins.__wrapped__(METHODS)
    # a damaged entry is read again
    monkeypatch.undo()
    damaged = DiskCache("plugins.json", tmp_path / "damaged.json")
    monkeypatch.setattr(registry, "CACHE", damaged)
    registry.Registry.plugins.__wrapped__(METHODS)
    (key,) = damaged.entries
    damaged.entries[key] = "[('method', 'byol'"
    assert registry.Registry.plugins.__wrapped__(METHODS) == read["method"]


def test_package_digest_follows_every_source_file(tmp_path, monkeypatch):
    from physiossl import registry

    tree = tmp_path / "physiossl"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.py").write_text("x = 1\n")
    (tree / "sub" / "b.py").write_text("y = 2\n")
    monkeypatch.setattr(registry, "ROOT", tree)
    first = registry.package_digest()
    (tree / "sub" / "b.py").write_text("y = 3\n")
    edited = registry.package_digest()
    (tree / "sub" / "c.py").write_text("")
    added = registry.package_digest()
    (tree / "sub" / "b.py").rename(tree / "b2.py")
    assert len({first, edited, added, registry.package_digest()}) == 4


def test_a_built_wheel_validates_configs_outside_the_checkout(tmp_path):
    """`pip install .` (not editable): the wheel carries the schema, and check-config works from it with the checkout
    out of reach (its import path and working directory elsewhere)."""
    import shutil
    import zipfile

    source = tmp_path / "source"      # a copy: building in the checkout would leave build/ there
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(source)], check=True, capture_output=True, text=True)
    (wheel,) = (tmp_path / "dist").glob("physiossl-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert "physiossl/schema.yaml" in archive.namelist()
        archive.extractall(tmp_path / "site")
    config = tmp_path / "paper_ecg.yaml"
    config.write_bytes((REPO / "config" / "paper_ecg.yaml").read_bytes())
    code = ("import sys; sys.path = [p for p in sys.path if 'physiossl' not in p and not p.endswith('src')]; "
            f"sys.path.insert(0, {str(tmp_path / 'site')!r}); from physiossl.cli import main; import physiossl; "
            "assert physiossl.__file__.startswith(sys.path[0]), physiossl.__file__; "
            "code = main(['check-config', sys.argv[1]]); assert 'torch' not in sys.modules; sys.exit(code)")
    proc = subprocess.run([sys.executable, "-c", code, str(config)], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0 and '"valid": true' in proc.stdout, proc.stdout + proc.stderr


def test_imports_form_no_cycle():
    """Counting every import statement, top-level or in a function (a module importing its own package's
    ``__init__`` aside): the modules of the package form no import cycle."""
    from physiossl.codedeps import imports_of

    modules = []
    for path in (REPO / "src" / "physiossl").rglob("*.py"):
        parts = list(path.relative_to(REPO / "src").with_suffix("").parts)
        modules.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    graph = {m: {n for n in imports_of(m) if n != m and not m.startswith(n + ".")} for m in modules}
    state: dict[str, int] = {}            # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for other in sorted(graph.get(module, ())):
            assert state.get(other) != 1, "import cycle: " + " -> ".join(path[path.index(other):] + [module, other])
            if other not in state:
                visit(other, path + [other])
        state[module] = 2

    for module in sorted(modules):
        if module not in state:
            visit(module, [module])
