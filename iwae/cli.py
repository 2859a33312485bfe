"""`python -m iwae <verb>`: the command line the workflow calls. Thin: parse, then call.

A user error prints one line naming the culprit and exits with status 2; a diverged run
exits with 3; an interrupted run (SIGTERM/SIGINT) saves a checkpoint and exits with
128 + the signal number.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import yaml

from iwae import __version__
from iwae.data.catalogue import CATALOGUE as DATASETS
from iwae.data.catalogue import fetch
from iwae.errors import Diverged, Interrupted, UserError
from iwae.plan import paths
from iwae.plan.config import EvalConfig, TrainConfig, add_flags, duplicate_keys, flag_values, int_list
from iwae.plan.figures import KINDS
from iwae.plan.layouts import LAYOUTS
from iwae.plan.references import SOURCES
from iwae.plan.vocabulary import BACKENDS
from iwae.system.files import write_json


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not the usage block
        self.exit(2, f"error: {self.prog}: {message} (see --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


# --------------------------------------------------------------------------- verbs


def cmd_fetch(args) -> int:
    fetched = fetch(
        args.dataset, Path(args.dest), args.mirror, only=args.only, timeout=args.timeout, retries=args.retries
    )
    for path in fetched:
        print(path)
    return 0


def cmd_prepare(args) -> int:
    from iwae.data.datasets import prepare

    out = Path(args.out or paths.data_file(args.dataset))
    meta = prepare(args.dataset, Path(args.raw), out)
    print(f"{out}: {meta['splits']}")
    return 0


def _options(kind, args, config_file: str | None = None):
    """A TrainConfig or EvalConfig from a YAML/JSON file (if any) and the flags given."""
    values = _read_config_file(Path(config_file)) if config_file else {}
    return kind.from_dict(values | flag_values(kind, args))


def _read_config_file(path: Path) -> dict:
    try:
        text = path.read_text()
        values = yaml.safe_load(text)
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML/JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise UserError(f"{path}: expected a mapping of training options")
    for where in duplicate_keys(text):
        print(f"warning: {path}, {where} given twice; the last value counts", file=sys.stderr)
    return values


def cmd_train(args) -> int:
    if args.pack:
        from iwae.training.packs import train_pack

        given = [f"--{f.name.replace('_', '-')}" for f in TrainConfig.option_fields()
                 if hasattr(args, f.name) and f.name != "threads"]  # fmt: skip
        given = [flag for flag, on in (("--out", args.out), ("--config", args.config), ("--restart", args.restart))
                 if on] + given  # fmt: skip
        if given:
            raise UserError(
                f"train --pack: the pack file {args.pack} holds every run's options; drop {', '.join(given)}"
            )
        records = train_pack(Path(args.pack), getattr(args, "threads", None), args.quiet, args.pack_runs)
        for r in records if not args.pack_runs else []:  # a worker: the pack's first process reports
            print(f"{r['run']}: {r['epochs']} epochs, final objective {r['objective_final']:.3f}")
        return 0
    if not args.out:
        raise UserError("train: --out (a run directory) or --pack (a pack file) is required")
    from iwae.training.loop import train

    record = train(_options(TrainConfig, args, args.config), Path(args.out), quiet=args.quiet, restart=args.restart)
    print(f"{args.out}: {record['epochs']} epochs, final objective {record['objective_final']:.3f}")
    return 0


def cmd_evaluate(args) -> int:
    from iwae.evaluation.evaluate import evaluate
    from iwae.models.store import load_model_file

    cfg = _options(EvalConfig, args)
    run = Path(args.run)
    model = Path(args.model) if args.model else run / "model.pt"
    data = args.data or load_model_file(model)["config"].get("data")
    if not data:
        raise UserError(f"{model}: its configuration names no dataset; pass --data")
    record = evaluate(model, Path(data), Path(args.out) if args.out else run / "eval.json", cfg, quiet=args.quiet)
    t = record["test"]
    print(
        f"{run}: test NLL {t['nll']:.2f} +- {t['stderr'] or 0:.2f} (k={cfg.k}, {t['points']} points), "
        f"active units {'+'.join(map(str, record['active_units']['per_layer']))}"
    )
    return 0


def cmd_bench(args) -> int:
    from iwae.bench.speed import BENCH_BACKENDS, bench, bench_pack, format_pack_table, format_table

    if args.gpu_report:
        from iwae.bench.gpu_report import gpu_report

        failed = gpu_report(Path(args.gpu_report), args.device, args.minutes, threads=args.threads)["failed"]
        if failed:  # one line, after every section is written: a script reading the status is not misled
            print(
                f"error: the GPU check failed: {'; '.join(failed)} (see {args.gpu_report}/report.json)", file=sys.stderr
            )
            return 1
        return 0
    if args.pack:
        report = bench_pack(args.pack, args.threads or 2, args.device if args.device != "auto" else "cpu")
        print(format_pack_table(report))
        if args.out:
            write_json(args.out, report)
        return 0
    names = BENCH_BACKENDS if args.backend == "both" else (args.backend,)
    report = bench(args.device, args.threads, args.seconds, args.repeats, names)
    print(format_table(report))
    if args.out:
        write_json(args.out, report)
    return 0


def cmd_verify(args) -> int:
    from iwae.report.verify import verify

    outcome = verify(Path(args.dir), args.points, Path(args.data), args.device, args.threads)
    if outcome.failed:
        more = f" (and {len(outcome.failed) - 1} more above)" if len(outcome.failed) > 1 else ""
        raise UserError(f"{args.dir}: not verified: {outcome.failed[0]}{more}")
    return 0


def cmd_publish(args) -> int:
    from iwae.report import publish

    if args.manifest_only:
        print(publish.write_manifest(Path(args.manifest_only)))
        return 0
    if not (args.results and args.out and args.spec):
        raise UserError("publish: --results, --out and --spec are required (or --manifest-only DIR)")
    try:
        spec = json.loads(Path(args.spec).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{args.spec}: not a readable list of experiments ({e})") from None
    print(publish.publish(Path(args.results), Path(args.out), spec, args.models))
    return 0


def cmd_report(args) -> int:
    from iwae.report import build

    if args.part == "table":
        build.table(args.experiment, args.layout, args.evals, Path(args.out_dir), args.title, args.reference)
    elif args.part == "quote":
        from iwae.report.document import refresh_quotes

        print(f"{args.readme}: {'updated' if refresh_quotes(Path(args.readme)) else 'already as the files are'}")
    elif args.part == "rebuild":
        from iwae.report.publish import rebuild

        for path in rebuild(Path(args.dir), Path(args.out or args.dir)):
            print(path)
    elif args.part == "findings":
        build.findings(args.experiment, args.evals, Path(args.out_dir), args.title, args.reference)
    elif args.part == "figure":
        build.figure(args.kind, Path(args.out_stem), args.evals, args.model, args.models, args.data, args.seed)
    elif args.part == "summary":
        build.summary(args.evals, Path(args.out_csv), Path(args.out_md))
    elif args.part == "document":
        build.report_document(args.tables, args.figures, Path(args.out), dict(args.titles))
    elif args.part == "pdf":
        from iwae.report.document import compile_pdf

        compile_pdf(Path(args.tex), Path(args.out))
    return 0


# --------------------------------------------------------------------------- parser


def _title(text: str) -> tuple[str, str]:
    name, sep, title = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not EXPERIMENT=TITLE")
    return name, title


EXAMPLES = """examples:
  python -m iwae fetch mnist                                   # raw files into resources/, verified
  python -m iwae prepare mnist                                 # results/data/mnist.npz
  python -m iwae train --out runs/m1 --data results/data/mnist.npz --layers 1 --objective iwae --k 50
  python -m iwae evaluate --run runs/m1 --k 5000               # runs/m1/eval.json
  python -m iwae bench --repeats 3                             # steps/s of both backends
  python -m iwae report table --experiment table1 --layout nll-au --evals runs/*/eval.json

in Python, a finished run: run = iwae.load_run("results/quick/runs/table1/mnist-1l-iwae-k50-s1")
"""


def _kinds_reading(*reads: str) -> list[str]:
    return [k.cli_name for k in KINDS.values() if k.reads in reads]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="iwae",
        description="Importance Weighted Autoencoders, reproduced. The Snakemake workflow calls these verbs; "
        "each can be run by hand (every verb has --help).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"iwae {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, parser_class=_Parser)

    p = sub.add_parser("fetch", help="download and verify a dataset's raw files")
    p.add_argument("dataset", choices=list(DATASETS))
    p.add_argument("--dest", default="resources", help="directory for raw files (default: resources)")
    p.add_argument(
        "--mirror", help="local mirror directory or http(s) base URL tried first (default: $IWAE_DATA_MIRROR)"
    )
    p.add_argument("--timeout", type=_positive_float, default=60.0, help="seconds per network request (default: 60)")
    p.add_argument("--retries", type=_positive_int, default=3, help="attempts per URL (default: 3)")
    p.add_argument(
        "--only", help="fetch only this raw file (its name under --dest, e.g. mnist/t10k-labels-idx1-ubyte.gz)"
    )
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("prepare", help="verify raw files and write the dataset's splits (.npz)")
    p.add_argument("dataset", choices=list(DATASETS))
    p.add_argument("--raw", default="resources", help="directory of raw files (default: resources)")
    p.add_argument("--out", help="output .npz (default: results/data/<dataset>.npz)")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train", help="train (or resume) one run, or a pack of runs; defaults are the paper's protocol")
    p.add_argument("--out", help="run directory (checkpoints, log, model.pt, train.json)")
    p.add_argument(
        "--pack", help="a pack file: several runs of one dataset trained in one job (see iwae.training.packs)"
    )
    p.add_argument("--pack-runs", type=int_list, help=argparse.SUPPRESS)  # a worker's share of a pack
    p.add_argument("--config", help="YAML/JSON file of training options; flags override it")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument(
        "--restart",
        action="store_true",
        help="train over a finished run (or checkpoints) of another configuration in --out, removing its model, "
        "records and checkpoints first (without it such a directory is refused)",
    )
    add_flags(p, TrainConfig)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="k = 5000 test log-likelihood and active units of a trained run")
    p.add_argument("--run", required=True, help="run directory holding model.pt")
    p.add_argument("--model", help="model file (default: <run>/model.pt)")
    p.add_argument("--data", help="prepared dataset (default: the one the run trained on)")
    p.add_argument("--out", help="output record (default: <run>/eval.json)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    add_flags(p, EvalConfig)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("verify", help="check published results or a results root without training: the manifest, "
                       "the tables rebuilt from the records, and each model's L_k on its first test points")  # fmt: skip
    p.add_argument("dir", help="a published folder (results/published/<name>) or a results root (results/<name>)")
    p.add_argument("--points", type=_positive_int, default=200,
                   help="test points per run evaluated again (whole batches; default 200)")  # fmt: skip
    p.add_argument("--data", default=paths.DATA, help="where the prepared datasets are (default %(default)s)")
    p.add_argument("--device", default="cpu", help="'cpu' (default), 'cuda' or 'auto'")
    p.add_argument("--threads", type=_positive_int, help="CPU threads (the evaluation's own for identical values)")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("publish", help="copy a results root's tables, figures and run records into a published "
                       "folder with its SHA256SUMS (the workflow's publish target runs it)")  # fmt: skip
    p.add_argument("--results", help="the results root (results/<name>)")
    p.add_argument("--out", help="the published folder (results/published/<name>), replaced whole")
    p.add_argument("--spec", help="the workflow's list of experiments and their runs (JSON)")
    p.add_argument("--models", action="store_true", help="also each run's model.pt")
    p.add_argument("--manifest-only", metavar="DIR", help="only write DIR/SHA256SUMS over the files in DIR")
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("bench", help="training and evaluation speed (steps/s, points/s)")
    p.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N'")
    p.add_argument("--threads", type=_positive_int, help="CPU threads")
    p.add_argument("--seconds", type=_positive_float, default=2.0, help="length of one timed trial (default: 2)")
    p.add_argument("--repeats", type=_positive_int, default=5, help="trials per figure (default: 5)")
    p.add_argument(
        "--backend",
        choices=[*(b for b in BACKENDS if b != "auto"), "both"],
        default="both",
        help="which backends to measure (default: both)",
    )
    p.add_argument(
        "--pack",
        type=_positive_int,
        help="instead: N runs trained as one pack job against N separate jobs, at k = 1, 5 and 50 (real iwae train "
        "processes on synthetic data; --threads is the total)",
    )
    p.add_argument(
        "--gpu-report",
        metavar="DIR",
        help="instead: the prepared check of Table 1's cost on a GPU (about 6 minutes; iwae.bench.gpu_report), "
        "written to DIR/report.json; on a CPU a quick version of it; exits 1 if a check fails, after writing every section",
    )
    p.add_argument("--minutes", type=_positive_float, default=6.0, help="time budget of --gpu-report (default: 6)")
    p.add_argument("--out", help="also write the results as JSON")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("report", help="tables, figures and the report document from finished runs")
    parts = p.add_subparsers(dest="part", required=True, parser_class=_Parser)
    q = parts.add_parser("table", help="an experiment's paper-style table and its comparison with the paper")
    q.add_argument("--experiment", required=True)
    q.add_argument("--layout", choices=list(LAYOUTS), default="nll-au", help="see iwae.plan.layouts")
    q.add_argument("--title", help="the experiment's title (default: 'Experiment <name>')")
    q.add_argument("--reference", choices=list(SOURCES), default="paper",
                   help="whose published values the comparison shows first (see iwae.plan.references)")  # fmt: skip
    q.add_argument("--evals", nargs="+", type=Path, required=True, help="the runs' eval.json records")
    q.add_argument("--out-dir", default=paths.tables(), help="default: the paper configuration's (%(default)s)")
    q = parts.add_parser("quote", help="rewrite the README's quoted tables (<!-- quote PATH --> ... <!-- /quote -->) "
                         "from the files they quote")  # fmt: skip
    q.add_argument("readme", nargs="?", default="README.md")
    q = parts.add_parser("rebuild", help="every table and findings table of a published folder, again from its "
                         "run records (no training, no models)")  # fmt: skip
    q.add_argument("dir", help="a published folder (results/published/<name>)")
    q.add_argument("--out", help="write there instead (its tables/ folder); default: the folder itself")
    q = parts.add_parser("findings", help="an experiment's findings judged from its runs: holds, contradicted, or "
                         "not resolved (iwae.plan.findings)")  # fmt: skip
    q.add_argument("--experiment", required=True)
    q.add_argument("--title", help="the experiment's title (default: 'Experiment <name>')")
    q.add_argument("--reference", choices=list(SOURCES), default="paper",
                   help="whose published values give the published differences (see iwae.plan.references)")  # fmt: skip
    q.add_argument("--evals", nargs="+", type=Path, required=True, help="the runs' eval.json records")
    q.add_argument("--out-dir", default=paths.tables(), help="default: the paper configuration's (%(default)s)")
    q = parts.add_parser("figure", help="one figure (.pdf and .png) from finished runs")
    q.add_argument("kind", choices=[k.cli_name for k in KINDS.values()],
                   help="what to draw (iwae.plan.figures)")  # fmt: skip
    q.add_argument("--evals", nargs="+", type=Path,
                   help=f"eval.json records ({', '.join(_kinds_reading('evals'))})")  # fmt: skip
    q.add_argument("--model", help=f"model.pt ({', '.join(_kinds_reading('model'))})")
    q.add_argument("--models", nargs="+", type=Path,
                   help=f"model.pt files ({', '.join(_kinds_reading('models', 'models and data'))})")  # fmt: skip
    q.add_argument("--data", help="prepared dataset (the figures drawn from models)")
    q.add_argument("--out-stem", required=True, help="output path without extension")
    q.add_argument("--seed", type=int, default=0, help="seed of the drawn samples (samples)")
    q = parts.add_parser(
        "summary", help="one row per run: summary.csv and its Markdown rendering; cost.md|tex|html beside it"
    )
    q.add_argument("--evals", nargs="+", type=Path, required=True)
    q.add_argument("--out-csv", default=f"{paths.tables()}/summary.csv")
    q.add_argument("--out-md", default=f"{paths.tables()}/summary.md")
    q = parts.add_parser("document", help="report.tex gathering tables and figures (and its PDF)")
    q.add_argument("--tables", nargs="+", type=Path, required=True)
    q.add_argument("--figures", nargs="*", type=Path, default=[])
    q.add_argument("--titles", nargs="*", type=_title, default=[], help="section titles as EXPERIMENT=TITLE")
    q.add_argument("--out", default=paths.report())
    q = parts.add_parser("pdf", help="compile a LaTeX document with pdflatex or tectonic")
    q.add_argument("--tex", default=paths.report())
    q.add_argument("--out", default=paths.report(suffix=".pdf"))
    p.set_defaults(func=cmd_report)
    return parser


# Set before PyTorch starts CUDA: the runs of a pack replay their steps on streams of their
# own, and more than this many streams would share hardware queues; a fixed cuBLAS workspace
# keeps products deterministic across streams.
CUDA_ENVIRONMENT = {"CUDA_DEVICE_MAX_CONNECTIONS": "32", "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}


def main(argv: list[str] | None = None) -> int:
    for key, value in CUDA_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Diverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f"{e}; checkpoint saved, run the same command again to resume", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
