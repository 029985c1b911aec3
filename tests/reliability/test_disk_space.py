"""Too little free disk: a clear error before anything is written, never a partial file."""

import shutil
from collections import namedtuple
from pathlib import Path

import pytest

import kerasline.files
from kerasline.errors import UserError

Usage = namedtuple("Usage", "total used free")


@pytest.fixture
def disk_nearly_full(monkeypatch):
    monkeypatch.setattr(kerasline.files.shutil, "disk_usage", lambda path: Usage(10**12, 10**12 - 2**20, 2**20))


def test_export_refuses_before_writing(trained, disk_nearly_full):
    from kerasline.export import export_run
    from kerasline.training.runs import latest_finished_run

    cfg = trained["cfg"]
    exports = trained["root"] / "exports" / "tiny"
    before = sorted(p.name for p in exports.iterdir())
    with pytest.raises(UserError, match=r"not enough free disk space for an export: about .* MiB needed, 1.0 MiB free"):
        export_run(cfg, latest_finished_run(cfg))
    assert sorted(p.name for p in exports.iterdir()) == before


def test_checkpoint_refuses_before_writing(tiny_cfg, disk_nearly_full):
    from kerasline.training.fit import train

    with pytest.raises(UserError, match="not enough free disk space for"):
        train(tiny_cfg)
    (run_dir,) = (Path(tiny_cfg.runs_dir) / "tiny").glob("run-*")
    assert not (run_dir / "best.weights.h5").exists()
    assert not any((run_dir / "backup").glob("*"))
    assert not any(run_dir.glob(".tmp-*"))


def test_real_disk_usage_is_what_is_checked(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    kerasline.files.ensure_free_space(tmp_path, 1, "a small file")
    with pytest.raises(UserError):
        kerasline.files.ensure_free_space(tmp_path, free * 2, "something huge")
