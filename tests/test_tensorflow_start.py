"""kerasline starts TensorFlow with its oneDNN kernels on any x86 CPU (kerasline/__init__.py), not only where
TensorFlow 2.21 picks them itself (AVX512_VNNI, BF16 or AMX), and leaves an explicit TF_ENABLE_ONEDNN_OPTS alone."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import kerasline, tensorflow
from tensorflow.python.util import _pywrap_util_port
print(_pywrap_util_port.IsMklEnabled())
"""


@pytest.mark.skipif(platform.machine().lower() not in {"x86_64", "amd64"}, reason="oneDNN's x86 kernels")
@pytest.mark.parametrize(("setting", "expected"), [(None, "True"), ("0", "False"), ("1", "True")])
def test_tensorflow_imported_after_kerasline_runs_onednn_unless_the_environment_says_otherwise(setting, expected):
    env = {key: value for key, value in os.environ.items() if key != "TF_ENABLE_ONEDNN_OPTS"}
    if setting is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = setting
    proc = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    assert proc.stdout.split()[-1] == expected
