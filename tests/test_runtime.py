"""The runtime's process-wide choices: when ONNX Runtime's threads may spin."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

CHECK = "from zfcaffe.runtime.session import threads_may_spin; print(threads_may_spin(), os.environ.get('OPENBLAS_THREAD_TIMEOUT'))"


def _run(first: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    return subprocess.run([sys.executable, "-c", f"import os; {first}; {CHECK}"], env=env, capture_output=True,
                          text=True, check=True).stdout.split()


@pytest.mark.skipif("openblas" not in str(getattr(np.__config__, "CONFIG", {}).get("Build Dependencies", {})
                                           .get("blas", {}).get("name", "")).lower(),
                    reason="NumPy without OpenBLAS (or too old to say): ONNX Runtime's threads never spin")
def test_threads_spin_only_where_blas_threads_sleep():
    # imported before NumPy (as the command line does): OpenBLAS is asked to let its threads sleep at once
    assert _run("import zfcaffe; import numpy") == ["True", "4"]
    # NumPy first, nothing asked: OpenBLAS's threads spin after each call, so ONNX Runtime's must not
    assert _run("import numpy; import zfcaffe") == ["False", "None"]
