"""`kerasline runs`: the runs of one experiment (or of every experiment under runs_dir) as a table, or two runs
compared, from what each run leaves on disk: run.json (status and times), history.csv (epochs, the monitored
validation figure), metrics.json (test metrics), config.toml, and the export versions made from it with their
blessings. A run whose files cannot be read is listed as "unreadable", with the reason, beside the others."""

import csv
import difflib
import functools
import json
import math
import tomllib
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from kerasline.config import MAXIMISED_MONITORS, ExperimentConfig
from kerasline.errors import UserError
from kerasline.export.repository import read_blessing, versions
from kerasline.training.runs import read_record, run_dirs

COLUMNS = ("run", "status", "started", "wall", "epochs", "best", "test", "exports")
ExportsOf = Callable[[Path], dict[Path, list[dict]]]


def runs_report(cfg: ExperimentConfig | None, compare: list[str] | None, as_json: bool) -> str:
    """The text `kerasline runs` prints. cfg None: every experiment under the default runs_dir."""
    root = Path(cfg.runs_dir) / cfg.name if cfg else Path(ExperimentConfig.model_fields["runs_dir"].default)
    if compare:
        result = compare_runs(root, *compare)
        return json.dumps(result, indent=2) if as_json else _comparison_text(result)
    rows = summaries(root, every_experiment=cfg is None)
    if as_json:
        return json.dumps(rows, indent=2)
    return _table(rows) if rows else f"no runs under {root}/"


def summaries(root: Path, every_experiment: bool = False) -> list[dict]:
    """One dict per run under root (an experiment's runs folder, or runs_dir with every_experiment), in order."""
    experiments = sorted(p for p in root.iterdir() if p.is_dir()) if every_experiment and root.is_dir() else [root]
    exports_of = functools.cache(_exports_by_run)  # one scan per model folder, shared by its runs
    return [summarize(run, run.relative_to(root).as_posix(), exports_of) for e in experiments for run in run_dirs(e)]


def summarize(run: Path, label: str, exports_of: ExportsOf) -> dict:
    try:
        return _summary(run, label, exports_of)
    except Exception as e:  # any damaged or missing file: this run is listed as unreadable, the others as they are
        return {"run": label, "path": str(run), "status": "unreadable", "error": f"{type(e).__name__}: {e}"}


def _summary(run: Path, label: str, exports_of: ExportsOf) -> dict:
    config = tomllib.loads((run / "config.toml").read_text())
    record = read_record(run) or {}  # none: a run from before run.json
    metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").exists() else None
    history = _history(run / "history.csv")
    monitor, status = config["training"]["monitor"], _status(record, finished=metrics is not None)
    model_dir = Path(config["export"]["dir"]) / config["export"].get("model_name", config["name"])
    summary = {
        "run": label,
        "path": str(run),
        "status": status,
        "started": record.get("started"),
        "ended": record.get("ended"),
        "wall_s": record.get("wall_s") if record.get("ended") else None,
        "attempts": record.get("attempts"),
        "epochs": len(history),
        "monitor": monitor,
        "best": _best([row.get(monitor) for row in history], monitor),
        "test": {k: v for k, v in (metrics or {}).get("test", {}).items() if isinstance(v, int | float)},
        "exports": exports_of(model_dir).get(run.resolve(), []),
    }
    return summary | ({"error": record["error"]} if status != "finished" and record.get("error") else {})


def _status(record: dict, finished: bool) -> str:
    """metrics.json marks a run finished (open_run resumes any run without one); run.json says how the others ended."""
    if finished:
        return "finished"
    status = record.get("status", "unfinished")
    return "unfinished" if status == "finished" else status


def _history(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def _best(values: list[float | None], monitor: str) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None
    return max(finite) if monitor in MAXIMISED_MONITORS else min(finite)


def _exports_by_run(model_dir: Path) -> dict[Path, list[dict]]:
    """The model's versions by the run they were exported from (verification.json's run_dir), with their verdict."""
    found: dict[Path, list[dict]] = {}
    for version in versions(model_dir):
        verification = model_dir / str(version) / "verification.json"
        run = Path(json.loads(verification.read_text())["run_dir"]).resolve()
        blessing = read_blessing(model_dir, version)  # none until `kerasline evaluate` judged the version
        verdict = blessing["verdict"] if blessing else None
        found.setdefault(run, []).append({"version": version, "verdict": verdict, "path": str(verification.parent)})
    return found


def compare_runs(root: Path, first: str, second: str) -> dict:
    """The config keys that differ between two runs, and their results side by side."""
    runs = [_find(root, name) for name in (first, second)]
    configs = [_flat(_config(run, name)) for run, name in zip(runs, (first, second), strict=True)]
    differ = sorted(k for k in configs[0].keys() | configs[1].keys() if configs[0].get(k) != configs[1].get(k))
    exports_of = functools.cache(_exports_by_run)
    figures = [_figures(summarize(run, name, exports_of)) for run, name in zip(runs, (first, second), strict=True)]
    names = list(dict.fromkeys([*figures[0], *figures[1]]))
    return {
        "runs": [first, second],
        "config": {key: [config.get(key) for config in configs] for key in differ},
        "results": {name: [figure.get(name) for figure in figures] for name in names},
    }


def _find(root: Path, name: str) -> Path:
    """A run named under root (run-003, or experiment/run-003 for every experiment), or a run folder's path."""
    for run in (root / name, Path(name)):
        if (run / "config.toml").is_file():
            return run
    runs = [*run_dirs(root), *(run for folder in root.glob("*/") for run in run_dirs(folder))]
    match = difflib.get_close_matches(name, [run.relative_to(root).as_posix() for run in runs], n=1)
    hint = f" (did you mean {match[0]!r}?)" if match else ""
    raise UserError(f"--compare {name}: no run with a config.toml at {root / name} or {name}{hint}")


def _config(run: Path, name: str) -> dict:
    try:
        return tomllib.loads((run / "config.toml").read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise UserError(f"--compare {name}: cannot read {run / 'config.toml'}: {e}") from None


def _flat(table: dict, prefix: str = "") -> dict:
    """Nested TOML tables as dotted keys: training.optimizer.name."""
    flat = {}
    for key, value in table.items():
        if isinstance(value, dict) and value:
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _figures(summary: dict) -> dict:
    figures = {key: summary.get(key) for key in ("status", "epochs", "wall_s")}
    if summary.get("monitor"):
        figures[f"best {summary['monitor']}"] = summary["best"]
    return figures | {f"test {name}": value for name, value in summary.get("test", {}).items()}


def _table(rows: list[dict]) -> str:
    cells = [COLUMNS, *([_cell(row, column) for column in COLUMNS] for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells]
    return "\n".join(lines + [f"{row['run']}: {row['error']}" for row in rows if row.get("error")])


def _cell(row: dict, column: str) -> str:
    """One table cell; "-" where the run has nothing to show (no end yet, no test, no export, unreadable)."""
    value = row.get(column)
    if column == "started" and value:
        value = datetime.fromisoformat(value).astimezone().strftime("%Y-%m-%d %H:%M")  # the reader's local time
    elif column == "wall":
        value = _duration(row.get("wall_s"))
    elif column == "best" and value is not None:
        value = f"{row['monitor']} {value:.4f}"
    elif column == "test":
        value = "  ".join(f"{k} {v:.4f}" for k, v in (value or {}).items())
    elif column == "exports":
        value = ", ".join(f"v{e['version']} {e['verdict'] or 'not evaluated'}" for e in value or [])
    return "-" if value is None or value == "" else str(value)


def _duration(seconds: float | None) -> str | None:
    return None if seconds is None else str(timedelta(seconds=round(seconds)))


def _comparison_text(result: dict) -> str:
    header = ["", *result["runs"]]
    config = [[f"  {key}", *(_plain(v) for v in values)] for key, values in result["config"].items()]
    results = [[f"  {name}", *(_result(name, v) for v in values)] for name, values in result["results"].items()]
    blocks = [header, ["config" if config else "config: the same"], *config, ["results"], *results]
    widths = [max(len(line[i]) for line in blocks if len(line) > i) for i in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=False)).rstrip() for line in blocks)


def _plain(value) -> str:
    return "-" if value is None else json.dumps(value)


def _result(name: str, value) -> str:
    if value is None:
        return "-"
    if name == "wall_s":
        return _duration(value)
    return f"{value:.4f}" if isinstance(value, float) else str(value)
