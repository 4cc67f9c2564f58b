"""``physiossl``: one subcommand per pipeline stage. Snakemake rules (and the exported dvc.yaml) call these."""

from __future__ import annotations

import argparse
import errno
import inspect
import json
import logging
import os
import sys
import time
from pathlib import Path

from .config import ALL_LABELS, ConfigError, load_config, random_init_encoder, stage_view


def _cmd_demo(args) -> dict:
    """``physiossl demo SOURCE --out DIR --n-records N --seed S``; with ``--configfile C --dataset D`` also the
    options of ``datasets.D.demo.options`` (e.g. a CODE-15% part count, PSG-Audio night lengths and rates)."""
    from .config import demo_options_problems
    from .data.sources import get_source
    options: dict = {}
    if args.configfile or args.dataset_key:
        if not (args.configfile and args.dataset_key):
            raise ConfigError("demo: --configfile and --dataset go together")
        config = load_config(args.configfile)
        ds = config["datasets"].get(args.dataset_key)
        if ds is None:
            raise ConfigError(f"{args.configfile}: no dataset '{args.dataset_key}' under 'datasets'")
        if ds["source"] != args.dataset:
            raise ConfigError(f"{args.configfile}: dataset '{args.dataset_key}' has source '{ds['source']}', "
                              f"not '{args.dataset}'")
        problems = demo_options_problems(args.dataset_key, ds)
        if problems:
            raise ConfigError(f"{args.configfile}: " + "; ".join(problems))
        options = dict(ds.get("demo", {}).get("options", {}))
    path = get_source(args.dataset).demo(Path(args.out), n_records=args.n_records, seed=args.seed, **options)
    return {"raw": str(path)}


def _cmd_download(args) -> dict:
    """``physiossl download SOURCE --out DIR [--url URL]``, or ``--configfile C --dataset D``: the options of
    ``datasets.D.download`` (url, api, verify, ...) go to the source's ``download``."""
    from .data.sources import get_source
    options: dict = {}
    name = args.dataset
    if args.configfile:
        config = load_config(args.configfile)
        ds = config["datasets"].get(args.dataset)
        if ds is None:
            raise ConfigError(f"{args.configfile}: no dataset '{args.dataset}' under 'datasets'")
        name, options = ds["source"], dict(ds.get("download", {}))
    source = get_source(name)
    if args.url:
        options["url"] = args.url
    try:
        signature = inspect.signature(source.download).bind(Path(args.out), progress=not args.no_progress, **options)
    except TypeError as exc:
        where = f"{args.configfile}: datasets.{args.dataset}.download" if args.configfile else "download"
        raise ConfigError(f"{where}: {exc} (source '{name}' takes {_options(source.download)})") from exc
    path = source.download(*signature.args, **signature.kwargs)
    return {"raw": str(path)}


def _options(function) -> str:
    params = [p for p in inspect.signature(function).parameters.values() if p.name not in ("out_dir", "progress")]
    return ", ".join(p.name for p in params) or "no options"


def _cmd_convert(args) -> dict:
    from .data.sources import get_source
    raw = Path(args.raw)
    if not raw.is_dir():
        raise FileNotFoundError(f"{raw}: raw tree not found (run `physiossl download` or `physiossl demo` first)")
    return get_source(args.dataset).convert(raw, Path(args.out), fs=args.fs,
                                            max_quarantine_fraction=args.max_quarantine, workers=args.workers)


def _cmd_convert_sleep(args) -> dict:
    from .data.sources import get_source, source_kind
    config = load_config(args.configfile)
    if args.dataset not in config["datasets"]:
        raise ConfigError(f"{args.configfile}: no dataset '{args.dataset}' under 'datasets'")
    if "sleep" not in config:
        raise ConfigError(f"{args.configfile}: no 'sleep' section: sleep stores take their features "
                          "from sleep.features")
    ds = stage_view(config, "convert_sleep", dataset=args.dataset)["datasets"][args.dataset]
    if source_kind(ds["source"]) != "sleep":
        raise ConfigError(f"{args.configfile}: dataset '{args.dataset}' (source '{ds['source']}') is not a sleep-sound "
                          "dataset: use `physiossl convert`")
    raw = Path(args.raw)
    if not raw.exists():
        raise FileNotFoundError(f"{raw}: raw tree not found (run `physiossl download` or `physiossl demo` first)")
    path = get_source(ds["source"]).convert(raw, Path(args.out), features=config["sleep"]["features"],
                                            channels=ds.get("channels"),
                                            max_quarantine_fraction=ds["max_quarantine_fraction"], workers=args.workers)
    return {"store": str(path)}


def _cmd_train_sleep(args) -> dict:
    from .stages import sleep
    config = load_config(args.configfile)
    if "sleep" not in config:
        raise ConfigError(f"{args.configfile}: no 'sleep' section: the sleep-staging experiment is not configured")
    view = stage_view(config, "train_sleep", variant=args.variant, pool=args.pool)
    result = sleep.run(view, args.variant, args.fraction, args.pool, Path(args.store),
                       [Path(p) for p in args.unlabeled], Path(args.out), args.seed)
    return {k: result[k] for k in ("variant", "fraction", "pool", "seed", "best_epoch", "seconds")} | {
        f"test_{k}": result["test"][str(result["n_classes"])][k] for k in ("accuracy", "kappa", "macro_f1")}


def _cmd_report_sleep(args) -> dict:
    from .stages import report
    view = stage_view(load_config(args.configfile), "sleep_report")
    return report.sleep(view, [Path(p) for p in args.results], Path(args.out_dir))


def _cmd_pretrain(args) -> dict:
    from .stages import pretrain
    view = stage_view(load_config(args.configfile), "pretrain", method=args.method)
    return pretrain.run(view, args.method, [Path(s) for s in args.store], Path(args.eval_store), Path(args.out))


def _cmd_evaluate(args) -> dict:
    from .stages import evaluate
    config = load_config(args.configfile)
    view = stage_view(config, "evaluate", protocol=args.protocol, subset=args.subset)
    checkpoint = Path(args.checkpoint) if args.checkpoint else None
    result = evaluate.run(view, args.method, args.protocol, Path(args.store), Path(args.out), checkpoint,
                          subset=args.subset, random_encoder=random_init_encoder(config, args.method))
    return {k: result[k] for k in ("method", "protocol", "subset", "test_macro_auc", "test_ci", "best_epoch")}


def _cmd_evaluate_periodic(args) -> dict:
    from .stages import periodic
    config = load_config(args.configfile)
    if "periodic" not in config:
        raise ConfigError(f"{args.configfile}: no 'periodic' section: the periodic-target experiment is not configured")
    view = stage_view(config, "evaluate_periodic", protocol=args.protocol, subset=args.subset)
    checkpoint = Path(args.checkpoint) if args.checkpoint else None
    result = periodic.run(view, args.method, args.protocol, Path(args.store), Path(args.out), checkpoint,
                          subset=args.subset, random_encoder=random_init_encoder(config, args.method))
    return {k: result[k] for k in ("method", "protocol", "subset", "target", "test_mae", "test_ci", "best_epoch")}


def _cmd_report(args) -> dict:
    from .stages import report
    view = stage_view(load_config(args.configfile), "report")
    return report.run(view, [Path(p) for p in args.results], Path(args.out_dir),
                      periodic=[Path(p) for p in args.periodic])


def _cmd_export_dvc(args) -> dict:
    from .dvc_export import export_dvc_yaml, pipeline_path
    snakefile, default = Path(args.snakefile), pipeline_path(load_config(args.configfile)["name"])
    root = snakefile.resolve().parent
    out = Path(args.out) if args.out else root / default
    try:   # stages run in the repository root: their wdir is the way back from the file's folder
        pipeline = out.resolve().relative_to(root)
    except ValueError:   # a file outside the repository: written as it would be at its default place
        pipeline = default
    text = export_dvc_yaml(Path(args.configfile), snakefile, pipeline)
    if args.check:
        if not out.is_file() or out.read_text() != text:
            raise SystemExit(f"{out} is stale: regenerate it with "
                             f"`physiossl export-dvc --configfile {args.configfile}`")
        return {"dvc_yaml": str(out), "up_to_date": True}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return {"dvc_yaml": str(out)}


def _cmd_dvc_sync(args) -> dict:
    from .dvc_export import sync
    return sync(Path(args.configfile), Path(args.snakefile))


def _cmd_sizing(args) -> dict:
    from .stages import sizing
    configs = [load_config(path) for path in args.configfile]
    names = [c["name"] for c in configs]
    if len(set(names)) != len(names):
        raise ConfigError(f"sizing: the configs must have different names (got {names})")
    return sizing.run(configs, Path(args.out), Path(args.csv) if args.csv else None, baseline=args.baseline,
                         limit=args.limit)


def _cmd_verify_store(args) -> dict:
    """``physiossl verify-store STORE...``: every file of each store against the manifest written with it (sizes
    and SHA-256), then the store's contract (ECG or sleep)."""
    from .data.ecg.store import open_store
    from .data.files import MANIFEST
    from .data.sleep.store import SLEEP_SCHEMA, validate_sleep_store
    from .data.store import STORE_QUARANTINE, StoreError, check_files, quarantine_path
    verified = {}
    for store in map(Path, args.stores):
        check_files(store, hashes=True)
        inside, published = store / STORE_QUARANTINE, quarantine_path(store)
        if inside.is_file() and published.is_file() and inside.read_bytes() != published.read_bytes():
            raise StoreError(f"{published} is not the quarantine list of {store} (its copy {inside} differs): "
                             "rerun the conversion")
        schema = json.loads((store / "zarr.json").read_text()).get("attributes", {}).get("schema")
        validate_sleep_store(store) if schema == SLEEP_SCHEMA else open_store(store)
        verified[str(store)] = len(json.loads((store / MANIFEST).read_text())["files"])
    return {"verified": verified}


def _cmd_check_config(args) -> dict:
    config = load_config(args.configfile, deep=args.deep)
    return {"configfile": args.configfile, "name": config["name"], "valid": True, "deep": args.deep}


def build_parser() -> argparse.ArgumentParser:
    from .variants import variant_names

    parser = argparse.ArgumentParser(prog="physiossl", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--log", metavar="FILE", default=None,
                        help="append everything the command prints (and its worker processes) to FILE, creating its "
                             "folder: the Snakemake rules' log files")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="write a small synthetic dataset tree in the real file format")
    p.add_argument("dataset")
    p.add_argument("--out", required=True)
    p.add_argument("--n-records", type=int, default=1500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--configfile", default=None,
                   help="with --dataset: pass the options of datasets.<dataset>.demo.options to the source's demo")
    p.add_argument("--dataset", dest="dataset_key", default=None, help="the dataset of --configfile")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("download", help="download and verify a dataset (resumes broken transfers)")
    p.add_argument("dataset", help="a source, or with --configfile a dataset of the config")
    p.add_argument("--out", required=True)
    p.add_argument("--url", default=None, help="archive URL (default: the dataset's official one)")
    p.add_argument("--configfile", default=None,
                   help="read the dataset's source and its download options (datasets.<dataset>.download) from here")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_download)

    p = sub.add_parser("convert", help="convert a raw tree into a store")
    p.add_argument("dataset")
    p.add_argument("--raw", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--fs", type=int, default=100, help="sampling rate of the store in Hz (default 100)")
    p.add_argument("--max-quarantine", type=float, default=0.01,
                   help="fail when more than this fraction of records is quarantined (default 0.01)")
    p.add_argument("--workers", type=int, default=1,
                   help="processes that derive the heart rates from the signals (default 1)")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("convert-sleep", help="convert a sleep-sound tree (PSG-Audio, a folder of recordings) into a "
                       "sleep store of log-mel epochs")
    p.add_argument("--configfile", required=True, help="gives the dataset's channels and sleep.features")
    p.add_argument("--dataset", required=True, help="a dataset of the config with a sleep-sound source")
    p.add_argument("--raw", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--workers", type=int, default=1, help="processes that read and featurise nights (default 1)")
    p.set_defaults(func=_cmd_convert_sleep)

    p = sub.add_parser("train-sleep", help="train and test one sleep-staging run of the ablation grid")
    p.add_argument("--configfile", required=True)
    p.add_argument("--variant", required=True, choices=variant_names())
    p.add_argument("--fraction", required=True, type=float, help="fraction of the training nights that keep labels")
    p.add_argument("--pool", required=True, choices=["none", "in", "ood"],
                   help="unlabeled pool: none (supervised), in (the dataset's unlabeled nights), "
                        "ood (+ sleep.unlabeled)")
    p.add_argument("--seed", type=int, default=None,
                   help="training seed (labeled nights, initialisation, batches); default: the config's seed")
    p.add_argument("--store", required=True, help="sleep store of sleep.dataset")
    p.add_argument("--unlabeled", nargs="*", default=[], help="sleep stores of sleep.unlabeled (pool ood)")
    p.add_argument("--out", required=True, help="result file (.json); .npz predictions and .pt model beside it")
    p.set_defaults(func=_cmd_train_sleep)

    p = sub.add_parser("report-sleep", help="sleep-staging table and hypnogram from result files")
    p.add_argument("--configfile", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("results", nargs="+")
    p.set_defaults(func=_cmd_report_sleep)

    p = sub.add_parser("pretrain", help="self-supervised pretraining of one method")
    p.add_argument("--configfile", required=True)
    p.add_argument("--method", required=True)
    p.add_argument("--store", required=True, nargs="+", help="the store, or the stores of a pool")
    p.add_argument("--eval-store", required=True,
                   help="the evaluation store whose validation and test records are held out of pretraining")
    p.add_argument("--out", required=True, help="encoder checkpoint (.pt)")
    p.set_defaults(func=_cmd_pretrain)

    p = sub.add_parser("evaluate", help="linear evaluation or fine-tuning of an encoder")
    p.add_argument("--configfile", required=True)
    p.add_argument("--method", required=True,
                   help="method name, or a random-initialisation baseline ('random' or 'random_<encoder>')")
    p.add_argument("--protocol", required=True, choices=["linear", "finetune"])
    p.add_argument("--subset", default=ALL_LABELS,
                   help="training records: 'all' (default), 'frac<f>' (a fraction) or 'folds<k>' (the first k folds)")
    p.add_argument("--store", required=True)
    p.add_argument("--out", required=True, help="result file (.json)")
    p.add_argument("--checkpoint", default=None, help="pretrained encoder (.pt); omitted for random-init baselines")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("evaluate-periodic", help="periodic-target evaluation (heart rate) of an encoder")
    p.add_argument("--configfile", required=True)
    p.add_argument("--method", required=True,
                   help="method name, or a random-initialisation baseline ('random' or 'random_<encoder>')")
    p.add_argument("--protocol", required=True, choices=["linear", "finetune", "fft", "zero_shot"])
    p.add_argument("--subset", default=ALL_LABELS, help="training records: 'all' (default), 'frac<f>' or 'folds<k>'")
    p.add_argument("--store", required=True)
    p.add_argument("--out", required=True, help="result file (.json)")
    p.add_argument("--checkpoint", default=None, help="pretrained encoder (.pt); omitted for random-init baselines")
    p.set_defaults(func=_cmd_evaluate_periodic)

    p = sub.add_parser("report", help="tables and figure from result files")
    p.add_argument("--configfile", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--periodic", nargs="*", default=[], help="result files of the periodic-target experiment")
    p.add_argument("results", nargs="+")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("export-dvc", help="write the DVC pipeline of a config from its Snakemake DAG (the paper "
                       "config's: dvc.yaml, any other: pipelines/<name>/dvc.yaml)")
    p.add_argument("--configfile", default="config/config.yaml")
    p.add_argument("--snakefile", default="Snakefile")
    p.add_argument("--out", default=None,
                   help="the pipeline file (default: dvc.yaml for the paper config, else pipelines/<name>/dvc.yaml)")
    p.add_argument("--check", action="store_true", help="fail if --out differs from the export instead of writing")
    p.set_defaults(func=_cmd_export_dvc)

    p = sub.add_parser("dvc-sync", help="after `snakemake` ran jobs, or after `dvc pull`/`repro`/`checkout`: make DVC "
                       "and Snakemake agree that the outputs are up to date, running nothing (dvc commit of a "
                       "Snakemake run; snakemake --touch of DVC's outputs); fails when either tool still plans work")
    p.add_argument("--configfile", default="config/config.yaml")
    p.add_argument("--snakefile", default="Snakefile")
    p.set_defaults(func=_cmd_dvc_sync)

    p = sub.add_parser("sizing", help="sizing tables (wall time, peak memory, data and output size per job) from the "
                       "Snakemake benchmark files of runs")
    p.add_argument("--configfile", required=True, action="append",
                   help="a run's config (its benchmarks: <paths.results>/benchmarks/<rule>/<job>.tsv); repeatable")
    p.add_argument("--out", default="docs/sizing.md",
                   help="Markdown document; the block between its sizing markers is replaced (default docs/sizing.md)")
    p.add_argument("--csv", default=None, help="CSV of every job (default: --out with .csv)")
    p.add_argument("--baseline", default=None,
                   help="name of the config whose conversions are the reference of the streaming check")
    p.add_argument("--limit", type=float, default=1.5,
                   help="the streaming check's largest allowed ratio of peak RSS (default 1.5)")
    p.set_defaults(func=_cmd_sizing)

    p = sub.add_parser("verify-store", help="check every file of a store against its manifest (sizes, SHA-256)")
    p.add_argument("stores", nargs="+")
    p.set_defaults(func=_cmd_verify_store)

    p = sub.add_parser("check-config", help="validate a config file (without importing torch)")
    p.add_argument("configfile")
    p.add_argument("--deep", action="store_true",
                   help="also run the checks that need the methods' code (imports torch and Lightning)")
    p.set_defaults(func=_cmd_check_config)
    return parser


def _log_to(path: Path, argv: list[str]) -> None:
    """Send this process's stdout and stderr, and those of the processes it starts, to the end of ``path``; each run
    starts with a header line, so a resubmitted job's log keeps the attempt before it."""
    import datetime
    import os
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    started = datetime.datetime.now().isoformat(timespec="seconds")
    print(f"==== {started} physiossl {' '.join(argv)}", flush=True)


def _disk_full(exc: BaseException) -> OSError | None:
    """The ENOSPC error behind ``exc`` (itself, or what it was raised from), if any."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _written(exc: OSError, args) -> str:
    """What the command was writing when the disk filled: its output, and the file the error names."""
    output, file = getattr(args, "out", None) or getattr(args, "out_dir", None), exc.filename
    if output and file and str(file) != str(output):
        return f"{output} ({file})"
    return str(output or file or "its output")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.log:
        _log_to(Path(args.log), sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("lightning.pytorch", "lightning.fabric", "snakemake"):
        logging.getLogger(name).propagate = False  # they have their own handlers
    try:
        result = args.func(args)
    except ConfigError as exc:
        print(f"physiossl: error: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        if args.verbose:
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        full = _disk_full(exc)
        if full is not None:
            message = f"the disk is full (no space left on device) while writing {_written(full, args)}: {message}"
        print(f"physiossl {args.command}: error: {message}", file=sys.stderr)
        return 1
    print(json.dumps(result, default=str))
    _trace_imports(sys.argv[1:] if argv is None else argv)
    return 0


#: a folder where every successful command records the physiossl modules it imported (the code-input test)
TRACE_IMPORTS = "PHYSIOSSL_TRACE_IMPORTS"


def _trace_imports(argv: list[str]) -> None:
    folder = os.environ.get(TRACE_IMPORTS)
    if not folder:
        return
    from .data.files import write_text_atomic

    modules = sorted(name for name in sys.modules if name == "physiossl" or name.startswith("physiossl."))
    path = Path(folder) / f"{os.getpid()}-{time.time_ns()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps({"argv": list(argv), "modules": modules}))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
