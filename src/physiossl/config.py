"""Configuration: loading, validation against the schema shipped in the package (``physiossl/schema.yaml``)
and per-stage views.

A stage never sees the whole configuration, only the keys that :func:`stage_keys` lists for it. The
Snakefile declares the same keys as rule ``params`` and the DVC export lists them as stage ``params``,
so a changed value reruns exactly the jobs that read it.
"""

from __future__ import annotations

import copy
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().with_name("schema.yaml")
RANDOM_INIT = "random"  # the random-initialisation baseline: a method name that needs no pretraining
ALL_LABELS = "all"     # the evaluation subset that trains on every record of evaluate.train_folds
#: training loggers (``pretrain.trainer.logger`` for pretraining and evaluation, ``sleep.train.logger``) and the
#: Python packages that provide them (any one of them); Lightning's CSV logger is always written as well
LOGGERS = {"csv": (), "tensorboard": ("tensorboard", "tensorboardX"), "mlflow": ("mlflow",), "dvclive": ("dvclive",)}
DEFAULT_LOGGER = "csv"
#: accelerators that train on the GPUs a job requests (``resources.<stage>.gpu``); ``auto`` uses them if it gets any
GPU_ACCELERATORS = ("gpu", "cuda")


class ConfigError(ValueError):
    """A configuration file is missing, malformed or violates the schema."""


#: the safe YAML loader, in C (libyaml) where PyYAML has it: 8x faster on the schema, the same documents
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str):
    return yaml.load(text, Loader=YAML_LOADER)


def _schema() -> dict:
    return load_yaml(SCHEMA_PATH.read_text())


def validate_config(config: dict, source: str = "<config>", deep: bool = False) -> dict:
    """Validate ``config`` against the schema and the cross-key rules; return it unchanged. Imports neither torch
    nor Lightning unless ``deep``, which also runs the checks that need a method's code
    (:meth:`physiossl.methods.base.SSLMethod.check_config`)."""
    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors:
            key = ".".join(str(p) for p in err.absolute_path) or "<top level>"
            message = err.message
            if err.validator == "pattern" and err.schema.get("description"):   # say what the pattern means
                message = f"{err.instance!r} is not {' '.join(err.schema['description'].split())}"
            lines.append(f"  config key '{key}': {message}")
        raise ConfigError(f"{source}: invalid configuration\n" + "\n".join(lines))
    _check_cross_keys(config, source, deep)
    return config


def pretrain_members(config: dict) -> list[str]:
    """The datasets that pretraining reads: ``pretrain.dataset`` itself, or the members of that pool."""
    name = config["pretrain"]["dataset"]
    return list(config.get("pools", {}).get(name, [name]))


def is_random_init(method: str) -> bool:
    """Whether ``method`` names a random-initialisation baseline: ``random`` or ``random_<encoder>``."""
    return method == RANDOM_INIT or method.startswith(RANDOM_INIT + "_")


def random_init_encoder(config: dict, method: str) -> str | None:
    """The encoder of a random-initialisation baseline (``random``: ``pretrain.encoder``; ``random_<encoder>``),
    or None for an SSL method."""
    if not is_random_init(method):
        return None
    return method[len(RANDOM_INIT) + 1:] or config["pretrain"]["encoder"]


def experiment_methods(config: dict) -> list[str]:
    """Every method of the classification experiment and of the periodic-target experiment, in order."""
    return list(dict.fromkeys(config.get("experiment", {}).get("methods", [])
                              + config.get("periodic", {}).get("methods", [])))


def pretrained_methods(config: dict) -> list[str]:
    """The methods of the experiments that are pretrained (everything but the random-init baselines)."""
    return [m for m in experiment_methods(config) if random_init_encoder(config, m) is None]


def eval_subsets(config: dict, protocol: str, section: str = "experiment") -> list[str]:
    """Training subsets a protocol of ``section`` (``experiment`` or ``periodic``) is run on: ``all`` and, for the
    label-efficiency protocols, ``frac<f>`` (a fraction of the training records) and ``folds<k>`` (the first k
    training folds)."""
    sweep = config[section].get("label_efficiency", {})
    if protocol not in sweep.get("protocols", []):
        return [ALL_LABELS]
    return ([ALL_LABELS] + [f"frac{f:g}" for f in sweep.get("fractions", [])]
            + [f"folds{k}" for k in sweep.get("folds", [])])


def _check_methods(config: dict, deep: bool) -> list[str]:
    from .methods import validate_method_config
    from .models import ENCODERS
    from .models import encoder_args as encoder_args_of

    problems = []
    for name, cfg in config["pretrain"]["methods"].items():
        problems += validate_method_config(name, cfg, f"pretrain.methods.{name}", encoder=config["pretrain"]["encoder"],
                                           deep=deep)
    for section in ("experiment", "periodic"):
        for method in config.get(section, {}).get("methods", []):
            encoder = random_init_encoder(config, method)
            if encoder is not None and encoder not in ENCODERS:
                problems.append(f"config key '{section}.methods': baseline '{method}' names unknown encoder "
                                f"'{encoder}' (available: {ENCODERS.names()})")
            elif encoder is None and method not in config["pretrain"]["methods"]:
                problems.append(f"config key '{section}.methods': method '{method}' has no entry under "
                                "'pretrain.methods'")
    for section, settings in (("evaluate", config["evaluate"]), ("periodic", config.get("periodic", {}))):
        experiment = "experiment" if section == "evaluate" else "periodic"
        for protocol in ("linear", "finetune"):
            for method in settings.get(protocol, {}).get("overrides", {}):
                if method not in config[experiment]["methods"]:
                    problems.append(f"config key '{section}.{protocol}.overrides.{method}': not a method of "
                                    f"{experiment}.methods")
    encoder_args = config["pretrain"].get("encoder_args")
    if encoder_args is not None:
        accepted = encoder_args_of(config["pretrain"]["encoder"])
        problems += [f"config key 'pretrain.encoder_args.{k}': encoder '{config['pretrain']['encoder']}' takes no "
                     f"argument '{k}' (accepted: {accepted})" for k in encoder_args if k not in accepted]
    return problems


def _check_label_efficiency(config: dict, section: str) -> list[str]:
    problems = []
    sweep = config[section].get("label_efficiency", {})
    for protocol in sweep.get("protocols", []):
        if protocol not in config[section]["protocols"]:
            problems.append(f"config key '{section}.label_efficiency.protocols': '{protocol}' is not in "
                            f"{section}.protocols")
    for k in sweep.get("folds", []):
        if k >= len(config["evaluate"]["train_folds"]):
            problems.append(f"config key '{section}.label_efficiency.folds': {k} must be below the number of "
                            f"training folds ({len(config['evaluate']['train_folds'])}; all of them is the 'all' run)")
    return problems


def _check_periodic(config: dict) -> list[str]:
    pe = config["periodic"]
    problems = _check_label_efficiency(config, "periodic")
    for protocol, settings in (("linear", "linear"), ("zero_shot", "linear"), ("finetune", "finetune"),
                               ("zero_shot", "zero_shot")):
        if protocol in pe["protocols"] and settings not in pe:
            problems.append(f"config key 'periodic.{settings}': required by protocol '{protocol}'")
    if pe["band"][0] >= pe["band"][1]:
        problems.append(f"config key 'periodic.band': expected [low, high] with low < high, got {pe['band']}")
    if "zero_shot" in pe:
        (low, high), train_max = pe["zero_shot"]["hold_out"], pe["zero_shot"]["train_max"]
        if not low < high < train_max:
            problems.append(f"config key 'periodic.zero_shot': expected hold_out [low, high] with low < high < "
                            f"train_max, got hold_out {pe['zero_shot']['hold_out']}, train_max {train_max}")
    return problems


def _check_cross_keys(config: dict, source: str, deep: bool) -> None:
    from .data.sources import available

    problems = []
    for name, ds in config["datasets"].items():
        if ds["source"] not in available():
            problems.append(f"config key 'datasets.{name}.source': unknown source '{ds['source']}' "
                            f"(available: {available()})")
        else:
            problems += _check_dataset_kind(name, ds) + demo_options_problems(name, ds)
    for section, stages in (("experiment", ("pretrain", "evaluate")), ("sleep", ("sleep",))):
        for stage in stages:
            if section in config and stage not in config["resources"]:
                problems.append(f"config key 'resources.{stage}': required by the '{section}' section")
    if "sleep" in config:
        problems += _check_sleep(config)
    if "experiment" in config:
        problems += _check_ecg(config, deep)
    problems += _check_training(config)
    if problems:
        raise ConfigError(f"{source}: invalid configuration\n" + "\n".join("  " + p for p in problems))


def _training_stages(config: dict) -> list[tuple[str, str, int | str]]:
    """(stage, trainer settings key, devices) of each training stage of the config: pretraining on
    ``pretrain.trainer.devices``; evaluation (with pretrain.trainer's accelerator and logger) and sleep training on
    one device."""
    out = []
    if "experiment" in config:
        out += [("pretrain", "pretrain.trainer", config["pretrain"]["trainer"]["devices"]),
                ("evaluate", "pretrain.trainer", 1)]
    if "sleep" in config:
        out.append(("sleep", "sleep.train", 1))
    return out


def _check_training(config: dict) -> list[str]:
    """The logger's package is installed, and each training job requests the GPUs its trainer uses."""
    problems = []
    for key in dict.fromkeys(key for _, key, _ in _training_stages(config)):
        problems += logger_problems(get_key(config, key).get("logger", DEFAULT_LOGGER), f"{key}.logger")
    for stage, key, devices in _training_stages(config):
        if stage in config["resources"]:
            problems += device_problems(get_key(config, key)["accelerator"], devices, config["resources"][stage]["gpu"],
                                        f"{key}.accelerator", f"{key}.devices" if stage == "pretrain" else None,
                                        f"resources.{stage}.gpu")
    return problems


def logger_problems(kind: str, key: str) -> list[str]:
    """A training logger whose package is not installed (checked without importing it)."""
    packages = LOGGERS.get(kind, ())
    if not packages or any(find_spec(p) is not None for p in packages):
        return []
    return [f"config key '{key}': logger '{kind}' needs the Python package {' or '.join(packages)}, which is not "
            f"installed (pip install {packages[0]}, or install physiossl with the [{kind}] extra), or use logger 'csv'"]


def device_problems(accelerator: str, devices: int | str, gpus: int, accelerator_key: str, devices_key: str | None,
                    gpus_key: str) -> list[str]:
    """The GPUs a job requests from the scheduler (``gpus_key``) against the ones its trainer uses: with a GPU
    accelerator, as many as the trainer's devices (``devices_key``; one where the stage trains on one device, e.g.
    evaluation) or, for devices ``auto``, at least one; with ``auto``, none or that many; with any other
    accelerator, none."""
    uses = f"'{devices_key}' is {devices}" if devices_key else "the stage trains on one device"
    if accelerator in GPU_ACCELERATORS:
        if gpus == 0:
            return [f"config key '{gpus_key}': requests no GPU but '{accelerator_key}' is '{accelerator}' "
                    f"(request {devices if devices != 'auto' else 'at least 1'})"]
        if devices != "auto" and gpus != devices:
            return [f"config key '{gpus_key}': requests {gpus} GPU(s) but {uses}: set them equal"]
        return []
    if accelerator == "auto":
        if gpus and devices != "auto" and gpus != devices:
            return [f"config key '{gpus_key}': requests {gpus} GPU(s) but {uses} (with '{accelerator_key}' auto, "
                    f"the trainer uses the requested GPUs): set them equal, or request 0 to train on the CPU"]
        return []
    if gpus:
        return [f"config key '{gpus_key}': requests {gpus} GPU(s) but '{accelerator_key}' is '{accelerator}', which "
                f"uses none: request 0, or set the accelerator to gpu or auto"]
    return []


def _check_dataset_kind(name: str, ds: dict) -> list[str]:
    from .data.sources import source_kind

    if source_kind(ds["source"]) == "sleep":
        return [f"config key 'datasets.{name}.fs': not used by the sleep source '{ds['source']}' (its stores hold "
                "features at sleep.features.audio_fs)"] if "fs" in ds else []
    problems = []
    if "fs" not in ds:
        problems.append(f"config key 'datasets.{name}.fs': required by the ECG source '{ds['source']}'")
    if "channels" in ds:
        problems.append(f"config key 'datasets.{name}.channels': only sleep-sound sources read audio channels")
    if ds.get("demo", {}).get("n_records", 50) < 50:
        problems.append(f"config key 'datasets.{name}.demo.n_records': at least 50 records for an ECG demo")
    return problems


def demo_options_problems(name: str, ds: dict) -> list[str]:
    """Keys of ``datasets.<name>.demo.options`` that the source's ``demo()`` does not take."""
    from .data.sources import demo_options

    options = ds.get("demo", {}).get("options", {})
    if not options:
        return []
    accepted = demo_options(ds["source"])
    return [f"config key 'datasets.{name}.demo.options.{key}': the demo of source '{ds['source']}' takes no option "
            f"'{key}' (accepted: {accepted or 'none'})" for key in options if key not in accepted]


def sleep_datasets(config: dict) -> list[str]:
    """The datasets of the sleep experiment: the scored one, then the unlabeled ones."""
    sl = config.get("sleep")
    return [sl["dataset"], *sl.get("unlabeled", [])] if sl else []


def sleep_runs(config: dict) -> list[tuple[str, float, str, int]]:
    """(variant, labeled fraction, pool, seed) of every run of the sleep ablation grid; supervised runs use pool
    'none'; the seeds are ``sleep.grid.seeds``, by default the top-level ``seed``."""
    from .variants import VARIANTS

    grid = config["sleep"]["grid"]
    runs = []
    for variant in grid["variants"]:
        for fraction in grid["fractions"]:
            runs += [(variant, fraction, pool) for pool in grid["pools"]] if VARIANTS[variant].get("unlabeled") else [
                (variant, fraction, "none")]
    return [(*run, seed) for run in runs for seed in grid.get("seeds", [config["seed"]])]


def _check_sleep(config: dict) -> list[str]:
    from .augment.validate import validate_audio_augment
    from .data.sleep.features import check_features
    from .data.sources import available, source_kind
    from .models import sleep_model_args
    from .variants import VARIANTS

    sl, datasets, problems = config["sleep"], config["datasets"], []
    for key, name in [("sleep.dataset", sl["dataset"])] + [("sleep.unlabeled", n) for n in sl.get("unlabeled", [])]:
        if name not in datasets:
            problems.append(f"config key '{key}': unknown dataset '{name}' (defined: {sorted(datasets)})")
        elif datasets[name]["source"] in available() and source_kind(datasets[name]["source"]) != "sleep":
            problems.append(f"config key '{key}': dataset '{name}' is not a sleep-sound dataset")
    problems += check_features(sl["features"], "sleep.features")
    accepted = sleep_model_args(sl["model"]["name"])
    problems += [f"config key 'sleep.model.args.{k}': model '{sl['model']['name']}' takes no argument '{k}' "
                 f"(accepted: {accepted})" for k in sl["model"].get("args", {}) if k not in accepted]
    for key in ("augment", "strong_augment"):
        if key in sl:
            problems += validate_audio_augment(sl[key], f"sleep.{key}")
    splits = sl["splits"]
    if splits["val"] + splits["test"] + splits["unlabeled"] >= 1:
        problems.append("config key 'sleep.splits': val + test + unlabeled must leave training nights (sum < 1)")
    grid = sl["grid"]
    for key in ("grid.variants", "hypnogram.variants"):
        for variant in get_key(sl, key) if _present(sl, key) else []:
            if variant not in VARIANTS:
                problems.append(f"config key 'sleep.{key}': unknown sleep-staging variant '{variant}' "
                                f"(available: {VARIANTS.names()})")
    semi = [v for v in grid["variants"] if v in VARIANTS and VARIANTS[v].get("unlabeled")]
    if "ood" in grid["pools"] and not sl.get("unlabeled"):
        problems.append("config key 'sleep.grid.pools': pool 'ood' needs unlabeled datasets in 'sleep.unlabeled'")
    if "in" in grid["pools"] and splits["unlabeled"] == 0 and 1 in grid["fractions"] and semi:
        problems.append("config key 'sleep.grid': pool 'in' at fraction 1 has no unlabeled nights "
                        "(set sleep.splits.unlabeled above 0)")
    for variant in sl.get("hypnogram", {}).get("variants", []):
        if variant not in grid["variants"]:
            problems.append(f"config key 'sleep.hypnogram.variants': '{variant}' is not in sleep.grid.variants")
    return problems


def _check_ecg(config: dict, deep: bool) -> list[str]:
    from .augment.validate import validate_noise

    datasets, pools = config["datasets"], config.get("pools", {})
    problems = []
    for pool, members in pools.items():
        if pool in datasets:
            problems.append(f"config key 'pools.{pool}': a pool cannot have the name of a dataset")
        for member in members:
            if member not in datasets:
                problems.append(f"config key 'pools.{pool}': unknown dataset '{member}' (defined: {sorted(datasets)})")
    if config["pretrain"]["dataset"] not in datasets and config["pretrain"]["dataset"] not in pools:
        problems.append(f"config key 'pretrain.dataset': unknown dataset or pool '{config['pretrain']['dataset']}' "
                        f"(datasets: {sorted(datasets)}, pools: {sorted(pools)})")
    if config["evaluate"]["dataset"] not in datasets:
        problems.append(f"config key 'evaluate.dataset': unknown dataset '{config['evaluate']['dataset']}' "
                        f"(defined: {sorted(datasets)})")
    problems += _check_methods(config, deep)
    ev = config["evaluate"]
    held_out = {ev["val_fold"], ev["test_fold"]}
    if ev["val_fold"] == ev["test_fold"]:
        problems.append("config key 'evaluate.test_fold': must differ from 'evaluate.val_fold'")
    if held_out & set(ev["train_folds"]):
        problems.append(f"config key 'evaluate.train_folds': contains held-out fold(s) "
                        f"{sorted(held_out & set(ev['train_folds']))}")
    if ev["dataset"] in pretrain_members(config) and held_out & set(config["pretrain"]["folds"]):
        problems.append(
            "config key 'pretrain.folds': pretraining on the evaluation's validation/test fold(s) "
            f"{sorted(held_out & set(config['pretrain']['folds']))} would leak them into the representation"
        )
    if ev["stride_s"] > ev["window_s"]:
        problems.append("config key 'evaluate.stride_s': larger than 'evaluate.window_s' leaves gaps")
    if "robustness" in ev:
        problems += validate_noise(ev["robustness"]["noise"], "evaluate.robustness.noise")
    problems += _check_label_efficiency(config, "experiment")
    if "periodic" in config:
        problems += _check_periodic(config)
    return problems


def load_config(path: str | Path, deep: bool = False) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        config = load_yaml(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return validate_config(config, str(path), deep)


def stage_keys(config: dict, stage: str, method: str | None = None, protocol: str | None = None,
               dataset: str | None = None, fs: str | None = None, subset: str | None = None,
               variant: str | None = None, pool: str | None = None, fraction: str | None = None,
               seed: str | None = None) -> list[str]:
    """Dotted config keys that a stage (a Snakemake rule) reads, given the job's wildcards."""
    if stage == "demo_data":
        return ["seed", f"datasets.{dataset}.source", f"datasets.{dataset}.demo"]
    if stage == "download_data":
        return [f"datasets.{dataset}.source", f"datasets.{dataset}.download"]
    if stage == "convert":
        return [f"datasets.{dataset}.source", f"datasets.{dataset}.fs", f"datasets.{dataset}.max_quarantine_fraction"]
    if stage == "convert_sleep":
        return [f"datasets.{dataset}.source", *_present(config, f"datasets.{dataset}.channels"),
                f"datasets.{dataset}.max_quarantine_fraction", "sleep.features"]
    if stage == "train_sleep":
        from .variants import VARIANTS

        plugin = VARIANTS[variant]
        return ["seed", "sleep.dataset", *(["sleep.unlabeled"] if pool == "ood" else []), "sleep.n_classes",
                "sleep.splits", "sleep.model", "sleep.seq_len", *_present(config, "sleep.normalize"),
                *_present(config, "sleep.train_stride"), "sleep.augment",
                *(_present(config, "sleep.strong_augment") if plugin.get("strong_augment") else []), "sleep.train",
                *(f"sleep.losses.{name}" for name in plugin.get("losses", ())), "sleep.bootstrap"]
    if stage == "sleep_report":
        return ["name", "sleep.grid", *_present(config, "sleep.hypnogram")]
    if stage == "pretrain":
        pool = config["pretrain"]["dataset"]
        return [
            "seed", "pretrain.dataset", *([f"pools.{pool}"] if pool in config.get("pools", {}) else []),
            "pretrain.folds", "pretrain.encoder", *_present(config, "pretrain.encoder_args"), "pretrain.crop_s",
            "pretrain.cache", "pretrain.trainer",
            f"pretrain.methods.{method}",
            # the leakage guard holds out the evaluation's validation and test records
            "evaluate.dataset", "evaluate.val_fold", "evaluate.test_fold",
        ]
    common = ["seed", "pretrain.encoder", *_present(config, "pretrain.encoder_args"), "pretrain.trainer.accelerator",
              "pretrain.trainer.precision", *_present(config, "pretrain.trainer.logger")]
    common += [f"evaluate.{k}" for k in ("dataset", "train_folds", "val_fold", "test_fold", "window_s", "stride_s",
                                         "aggregate", "batch_size", "bootstrap")]
    if stage == "evaluate":
        keys = common + ["evaluate.label_set", *_present(config, "evaluate.label_convention"), f"evaluate.{protocol}"]
        if subset == ALL_LABELS and "robustness" in config["evaluate"]:
            keys.append("evaluate.robustness")
        return keys
    if stage == "evaluate_periodic":
        settings = {"linear": ["linear"], "finetune": ["finetune"], "fft": [], "zero_shot": ["linear", "zero_shot"]}
        return common + [f"periodic.{k}" for k in ("target", "units", "units_per_hz", "band", *settings[protocol])]
    if stage == "report":
        return ["name", "experiment", *_present(config, "periodic")]
    raise KeyError(f"no config view for stage '{stage}'")


def _present(config: dict, dotted: str) -> list[str]:
    """``[dotted]`` if the config has that key, else ``[]`` (optional keys of a stage view)."""
    try:
        get_key(config, dotted)
    except KeyError:
        return []
    return [dotted]


def get_key(config: dict, dotted: str) -> Any:
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


def stage_view(config: dict, stage: str, **wildcards: str | None) -> dict:
    """A nested dict that holds only the keys the stage reads."""
    view: dict = {}
    for dotted in stage_keys(config, stage, **wildcards):
        parts = dotted.split(".")
        node = view
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = copy.deepcopy(get_key(config, dotted))
    return view
