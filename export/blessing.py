"""The blessing gate: the newest export's test metrics against [bless] floors and the current stable version."""

import difflib
import json
from collections.abc import Callable
from pathlib import Path

from kerasline.config import BlessConfig, ExperimentConfig
from kerasline.errors import ConfigError
from kerasline.export.repository import current_labels, read_blessing, versions, write_blessing


def judge(metrics: dict[str, float], bless: BlessConfig, stable: dict[str, float] | None) -> tuple[str, list[str]]:
    """BLESSED when every threshold holds; the reasons list each check, passed or not."""
    checks = [
        (rule, name, limit)
        for rule in ("minimum", "maximum", "max_drop", "max_rise")
        for name, limit in getattr(bless, rule).items()
    ]
    if not checks:
        return "NOT_BLESSED", ["no [bless] thresholds in the experiment: nothing is blessed without one"]
    for rule, name, _ in checks:
        if name not in metrics:
            match = difflib.get_close_matches(name, list(metrics), n=1)
            hint = f" (did you mean {match[0]!r}?)" if match else f" (metrics: {', '.join(metrics)})"
            raise ConfigError(f"bless.{rule}.{name}: not a test metric of this model{hint}")
    reasons, passed = [], True
    for rule, name, limit in checks:
        value = metrics[name]
        if rule in ("max_drop", "max_rise") and stable is None:
            reasons.append(f"{name}: no stable version yet, {rule} not applied")
            continue
        bound = {"minimum": limit, "maximum": limit}.get(rule)
        if bound is None:
            bound = stable[name] - limit if rule == "max_drop" else stable[name] + limit
        ok = value >= bound if rule in ("minimum", "max_drop") else value <= bound
        sign = (">=" if ok else "<") if rule in ("minimum", "max_drop") else ("<=" if ok else ">")
        what = f"{rule} {limit:g}" if rule in ("minimum", "maximum") else f"stable {stable[name]:.4f} {rule} {limit:g}"
        reasons.append(f"{name} {value:.4f} {sign} {bound:.4f} ({what})")
        passed &= ok
    return ("BLESSED" if passed else "NOT_BLESSED"), reasons


def bless_newest(cfg: ExperimentConfig, metrics_of: Callable[[Path], dict[str, float]]) -> dict | None:
    """Judge the newest exported version of cfg's model (metrics of the run it was exported from) and record it."""
    model_dir = Path(cfg.export.dir) / cfg.model_name
    if not versions(model_dir):
        return None
    version = versions(model_dir)[-1]
    run_dir = Path(json.loads((model_dir / str(version) / "verification.json").read_text())["run_dir"])
    metrics = metrics_of(run_dir)
    stable_version = current_labels(model_dir).get("stable")
    stable = read_blessing(model_dir, stable_version) if stable_version is not None else None
    verdict, reasons = judge(metrics, cfg.bless, stable["metrics"] if stable else None)
    record = {
        "version": version,
        "verdict": verdict,
        "reasons": reasons,
        "metrics": metrics,
        "run_dir": str(run_dir),
        "stable": {"version": stable_version, "metrics": stable["metrics"]} if stable else None,
        "thresholds": cfg.bless.model_dump(),
    }
    record["path"] = str(write_blessing(model_dir, version, record))
    return record
