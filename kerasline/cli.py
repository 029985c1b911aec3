"""`kerasline`: train, tune, evaluate, export and print experiments; cluster specs. User errors: one line, exit 2."""

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from kerasline import __version__
from kerasline.config import ExperimentConfig, load_experiment, to_toml
from kerasline.errors import Preempted, UserError
from kerasline.files import out_of_space

DEFAULT_EXPERIMENT = "mnist_cnn"
# predict's options of the in-process form, refused with --server rather than ignored.
PREDICT_LOCAL = {"output": "--output", "run": "--run", "runtime": "--runtime", "top_k": "--top-k", "strict": "--strict"}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # argparse stops filling KEY=VALUE words after an option (train X --dry-run a=1): take them back.
    stray = [word for word in extra if word.startswith("-") or "=" not in word]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if hasattr(args, "overrides"):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "strategy", None):
        args.overrides.append(f"training.strategy={args.strategy}")  # validated by the config like any override
    try:
        if args.command is cmd_cluster_spec:
            args.command(None, args)
            return 0
        cfg = load_experiment(args.experiment, args.overrides) if args.experiment else None  # runs: every experiment
        if args.command not in (cmd_config, cmd_runs):  # they read files only
            _import_tensorflow_quietly()
        args.command(cfg, args)
    except UserError as e:
        print(f"error: {_one_line(str(e))}", file=sys.stderr)
        return 2
    except Preempted as e:
        print(f"preempted: {e}", file=sys.stderr)
        return 128 + signal.SIGTERM
    except Exception as e:
        if not out_of_space(e):  # a full disk where no writer of ours says so (TensorBoard's event files)
            raise
        print(f"error: no space left on device ({str(e).strip().splitlines()[0][:200]})", file=sys.stderr)
        return 2
    return 0


def _import_tensorflow_quietly() -> None:
    """TF's native start-up lines (oneDNN notice, CUDA probing) are written before its logging is set
    up and ignore TF_CPP_MIN_LOG_LEVEL, burying our one-line errors. TF_CPP_MIN_LOG_LEVEL=0 shows them."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0":
        import tensorflow  # noqa: F401

        return
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf

        tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def cmd_config(cfg: ExperimentConfig, args: argparse.Namespace) -> None:
    print(to_toml(cfg), end="")


def cmd_train(cfg: ExperimentConfig, args: argparse.Namespace) -> None:
    from kerasline.export import export_run
    from kerasline.training.fit import plan, train

    if args.dry_run:
        summary = plan(cfg)
        print(summary["summary"], end="")
        print(
            f"dry run: {cfg.name}: {summary['parameters']:,} parameters, {summary['replicas']} replica(s), "
            f"{summary['steps_per_epoch']} steps per epoch × {cfg.training.total_epochs} epochs; nothing was written"
        )
        _report_skipped(summary["skipped"])
        return
    result = train(cfg)
    try:
        if not result.chief:
            print(f"worker done: test {_metrics_line(result.metrics)}; the chief writes {result.run_dir} and exports")
            return
        _report_skipped(result.skipped)
        print(f"run:         {result.run_dir}{f' (resumed at {result.resumed_at})' if result.resumed_at else ''}")
        print(f"replicas:    {result.replicas}")
        print(f"logs:        {result.run_dir / 'logs'}  (make tensorboard)")
        print(f"test:        {_metrics_line(result.metrics)}  ({result.run_dir / 'metrics.json'})")
        if args.no_export:
            print("export:      skipped (--no-export); `kerasline export` exports the latest finished run")
        else:
            _report_export(export_run(cfg, result.run_dir))
    finally:
        result.leave()  # the other workers stay until the chief has exported: leaving early looks like a crash


def cmd_cluster_spec(cfg: None, args: argparse.Namespace) -> None:
    from kerasline.cluster import parse_workers, tf_configs, write_tf_configs

    configs = tf_configs(parse_workers(args.workers))
    if args.index is not None:
        if not 0 <= args.index < len(configs):
            raise UserError(f"--index {args.index}: there are {len(configs)} workers (0 to {len(configs) - 1})")
        configs = [configs[args.index]]
    if args.out:
        for path in write_tf_configs(configs, args.out):
            print(path)
    else:
        print("\n".join(json.dumps(config) for config in configs))


def cmd_tune(cfg: ExperimentConfig, args: argparse.Namespace) -> None:
    from kerasline.config import experiment_path
    from kerasline.tuning import tune

    result = tune(cfg, experiment_path(args.experiment), args.overrides, restart=args.restart)
    if result.stopped_by_budget:
        print(f"budget of {cfg.tune.budget_minutes} min spent: the search stopped between trials")
    print(f"\n{'trial':>5}  {'status':<9} {cfg.tune.objective:>12}  values")
    for row in result.table:
        score = f"{row['score']:.4f}" if row["score"] is not None else "-"
        detail = row["error"] if row["error"] else json.dumps(row["values"])
        print(f"{row['trial']:>5}  {row['status'].lower():<9} {score:>12}  {detail}")
    print(f"\nsearch:      {result.search_dir}  (make tensorboard: HParams)")
    print(f"replicas:    {result.replicas}")
    print(f"best:        {result.search_dir / 'best.json'}")
    print(f"tuned:       {result.tuned_experiment}  (train it with: kerasline train {result.tuned_experiment})")


def cmd_evaluate(cfg: ExperimentConfig, args: argparse.Namespace) -> None:
    from kerasline.config import load_experiment
    from kerasline.export.blessing import bless_newest
    from kerasline.files import write_text_atomic
    from kerasline.training.fit import evaluate, evaluate_report
    from kerasline.training.report import report_lines

    run_dir = _run_dir(cfg, args)
    results = evaluate_report(cfg, run_dir)
    evaluated = {run_dir.resolve(): results["test"]}
    print(f"{run_dir}  test: {_metrics_line(results['test'])}")
    # Beside metrics.json, not over it: that one is what training measured, and marks the run finished.
    write_text_atomic(run_dir / "evaluation.json", json.dumps(results, indent=2) + "\n")
    for line in report_lines(results["report"]):
        print(f"  {line}")
    print(f"report:      {run_dir / 'evaluation.json'}")

    def metrics_of(run: Path) -> dict:  # the newest export may come from another run: evaluate it as it was trained
        if run.resolve() not in evaluated:
            evaluated[run.resolve()] = evaluate(load_experiment(str(run / "config.toml")), run)
        return evaluated[run.resolve()]

    record = bless_newest(cfg, metrics_of)
    if record is None:
        print(f"no exported version of {cfg.model_name} under {cfg.export.dir}/: nothing to bless")
        return
    print(f"{record['verdict']}: {cfg.model_name} version {record['version']} ({record['path']})")
    for reason in record["reasons"]:
        print(f"  {reason}")


def cmd_deploy(cfg: ExperimentConfig, args: argparse.Namespace) -> None:
    from kerasline.export.repository import deploy

    label = "canary" if args.canary else "stable"
    version = deploy(Path(cfg.export.dir), cfg.model_name, args.version, label)
    print(f"{label}: {cfg.model_name} version {version}  ({Path(cfg.export.dir) / 'models.config'})")


def cmd_rollback(cfg: ExperimentConfig, args: argparse.Namespace) -> None:
    from kerasline.export.repository import rollback

    current, previous = rollback(Path(cfg.export.dir), cfg.model_name)
    print(f"stable: {cfg.model_name} version {previous} (was {current})  ({Path(cfg.export.dir) / 'models.config'})")


def cmd_serve(cfg: ExperimentConfig, args: argparse.Namespace) -> None:
    from kerasline.serving.launch import serve

    serve(Path(cfg.export.dir), args.host, args.rest_port, args.grpc_port, dev=args.dev)


def cmd_predict(cfg: ExperimentConfig, args: argparse.Namespace) -> None:
    """--server: inputs through a running server, as before; without it, files through the export in-process."""
    local = {dest: getattr(args, dest) for dest in PREDICT_LOCAL if getattr(args, dest) is not None}
    if args.server:
        if local:
            raise UserError(f"{', '.join(PREDICT_LOCAL[dest] for dest in local)}: only without --server")
        from kerasline.serving.predict import predict_and_print

        predict_and_print(cfg, args)
        return
    if args.grpc or args.label:
        raise UserError("--grpc and --label: only with --server")
    if args.input is None:
        raise UserError("predict: give --input PATH to predict files in-process, or --server URL")
    from kerasline.serving.local import predict_files

    done = predict_files(cfg, args.input, version=args.version, **local)
    print(
        f"predicted:   {done.predicted} input(s), {done.skipped} skipped, {done.throughput:.1f} inputs/s "
        f"with {done.version_dir} ({done.runtime}) → {done.output}"
    )


def cmd_export(cfg: ExperimentConfig, args: argparse.Namespace) -> None:
    from kerasline.export import export_run

    _report_export(export_run(cfg, _run_dir(cfg, args)))


def cmd_anomaly(cfg: ExperimentConfig, args: argparse.Namespace) -> None:
    from kerasline.training.tasks import anomaly_task
    from kerasline.training.tasks.reconstruction import THRESHOLD_PERCENTILE

    task = anomaly_task(cfg)
    images = task.load_images(args.input) if args.input else None
    result = task.anomaly_scores(_run_dir(cfg, args), images)
    errors, threshold = result["errors"], result["threshold"]
    print(
        f"threshold:   {threshold:.6f}  ({THRESHOLD_PERCENTILE:g}th percentile of {result['validation_count']} "
        "validation reconstruction errors)"
    )
    print(f"{'index':>7}  {'error':>10}  anomaly")
    for i, error in enumerate(errors):
        print(f"{i:>7}  {error:>10.6f}  {'yes' if error > threshold else ''}".rstrip())
    source = args.input or "the test split"
    print(f"anomalies:   {int((errors > threshold).sum())} of {len(errors)} inputs ({source}) above the threshold")


def cmd_runs(cfg: ExperimentConfig | None, args: argparse.Namespace) -> None:
    from kerasline.runs_table import runs_report

    print(runs_report(cfg, args.compare, args.json))


def _report_skipped(skipped: tuple[str, ...]) -> None:
    if skipped:
        print(f"data:        skipped {len(skipped)} bad record(s) (data.on_error = skip); first: {skipped[0]}")


def _run_dir(cfg: ExperimentConfig, args: argparse.Namespace) -> Path:
    from kerasline.training.runs import latest_finished_run

    if args.run is None:
        return latest_finished_run(cfg)
    runs = (Path(cfg.runs_dir) / cfg.name).resolve()
    if not args.run.resolve().is_relative_to(runs):
        raise UserError(f"--run {args.run}: must be a run of {cfg.name!r}, under {runs}")
    if not (args.run / "metrics.json").is_file():
        raise UserError(f"--run {args.run}: not a finished run (no metrics.json)")
    return args.run


def _report_export(version_dir: Path) -> None:
    report = json.loads((version_dir / "verification.json").read_text())
    worst = max(d for diffs in report["max_abs_diff"].values() for d in diffs.values())
    print(f"savedmodel:  {version_dir}  (TF Serving layout)")
    print(f"onnx:        {version_dir / 'model.onnx'}")
    if "int8" in report:
        mean = ", ".join(f"{k} {v:.2g}" for k, v in report["int8"]["mean_abs_diff"].items())
        print(f"onnx int8:   {version_dir / report['int8']['file']}  (mean abs diff {mean})")
    print(
        f"parity:      max abs diff {worst:.2e} over {report['samples']} inputs  ({version_dir / 'verification.json'})"
    )


def _metrics_line(metrics: dict) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())


def _one_line(text: str) -> str:
    """An error echoes what the user typed; a control character in it (a stray '\\r' from a Windows shell
    script) is escaped, so the error stays one line."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"error: {_one_line(message)} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kerasline", description=__doc__)
    parser.add_argument("--version", action="version", version=f"kerasline {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND", parser_class=_Parser)
    for name, func, help_text in [
        ("train", cmd_train, "train an experiment (resuming an unfinished run), test it and export it"),
        ("tune", cmd_tune, "search the experiment's [tune] space; resumes an interrupted search"),
        ("evaluate", cmd_evaluate, "test-split metrics of the latest finished run"),
        ("export", cmd_export, "export the latest finished run: SavedModel + ONNX, verified"),
        ("config", cmd_config, "print the fully resolved config"),
        ("deploy", cmd_deploy, "point the stable (or --canary) label at a blessed version"),
        ("rollback", cmd_rollback, "move the stable label back to the previous stable version"),
        ("serve", cmd_serve, "serve the export repository: TF Serving in Docker, else the development server"),
        ("predict", cmd_predict, "predict files with the newest export, in-process, or through a --server"),
        ("anomaly", cmd_anomaly, "an autoencoder's reconstruction error per input, and a validation threshold"),
        ("runs", cmd_runs, "a table of the experiment's runs (default: every experiment's): status, times, metrics"),
    ]:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "experiment", nargs="?", default=DEFAULT_EXPERIMENT, help="name under experiments/ or a .toml path"
        )
        sub.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. training.epochs=3")
        if name in ("evaluate", "export", "anomaly"):
            sub.add_argument("--run", type=Path, help="a run directory (default: the latest finished run)")
        if name == "anomaly":
            sub.add_argument("--input", type=Path, help=".npy of images (default: the test split)")
        if name == "train":
            sub.add_argument("--dry-run", action="store_true", help="check config, data and model; train nothing")
            sub.add_argument("--no-export", action="store_true", help="train and test only (export later: `export`)")
            sub.add_argument(
                "--strategy", help="short for training.strategy=...; multi_worker reads the cluster from TF_CONFIG"
            )
        if name == "runs":
            sub.set_defaults(experiment=None)  # every experiment under runs_dir
            sub.add_argument("--compare", nargs=2, metavar="RUN", help="config differences and results of two runs")
            sub.add_argument("--json", action="store_true", help="print JSON instead of a table")
        if name == "tune":
            sub.add_argument("--restart", action="store_true", help="discard this search's finished trials")
        if name == "deploy":
            sub.add_argument("--version", type=int, help="the version to label (default: the newest)")
            sub.add_argument("--canary", action="store_true", help="move the canary label instead of stable")
        if name == "serve":
            sub.add_argument("--host", default="127.0.0.1", help="interface to bind (default: %(default)s)")
            sub.add_argument("--rest-port", type=int, default=8501, help="REST port (default: %(default)s)")
            sub.add_argument("--grpc-port", type=int, default=8500, help="gRPC port (default: %(default)s)")
            sub.add_argument("--dev", action="store_true", help="the development server even if Docker answers")
        if name == "predict":
            sub.add_argument("--server", help="REST base URL, e.g. http://127.0.0.1:8501 (default: predict in-process)")
            sub.add_argument("--grpc", metavar="HOST:PORT", help="with --server: also predict over gRPC and compare")
            sub.add_argument(
                "--input",
                type=Path,
                help="with --server: .npy (the single input) or .npz (named inputs); without: also a folder of images "
                "(any depth), an image, or a text file (one text, or line of token ids, per input)",
            )
            sub.add_argument("--count", type=int, default=4, help="with --server: held-out inputs to send (default: 4)")
            sub.add_argument("--output", type=Path, help="a .csv or .jsonl file (default: predictions.csv)")
            sub.add_argument(
                "--runtime",
                choices=("savedmodel", "onnx", "onnx-int8"),
                help="default: the SavedModel; onnx-int8: model-int8.onnx (export.onnx_int8)",
            )
            sub.add_argument("--top-k", type=int, help="a softmax classifier's K most probable classes (default: 1)")
            sub.add_argument("--strict", action="store_true", default=None, help="stop at the first bad input")
            target = sub.add_mutually_exclusive_group()
            target.add_argument("--version", type=int, help="a version (default: the newest, or the server's latest)")
            target.add_argument("--label", help="with --server: a version label, e.g. stable or canary")
            target.add_argument("--run", type=Path, help="the newest version exported from this run directory")
        sub.set_defaults(command=func)
    help_text = "print each worker's TF_CONFIG (worker 0 is the chief), one JSON per line, or write them"
    sub = commands.add_parser("cluster-spec", help=help_text, description=help_text)
    sub.add_argument("--workers", required=True, metavar="HOST:PORT,...", help="every worker's address, in order")
    sub.add_argument("--index", type=int, help="only this worker's (e.g. a Kubernetes pod's index)")
    sub.add_argument("--out", type=Path, metavar="DIR", help="write DIR/worker-N.json instead of printing")
    sub.set_defaults(command=cmd_cluster_spec)
    return parser


if __name__ == "__main__":
    sys.exit(main())
