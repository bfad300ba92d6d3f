"""`zfcaffe ARGS` run in the test's own process: the exit status, stdout and stderr as
conftest.run_cli gives them, without the ~3 s of a fresh interpreter importing ONNX
Runtime each time (a test of a command's errors and outputs, not of its start-up:
tests/test_cli.py keeps the subprocess runs that check what a fresh process prints)."""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import traceback


def cli_here(*args, check: bool = True) -> subprocess.CompletedProcess:
    from zfcaffe.cli import main
    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    saved = dict(os.environ)            # --quiet sets ZFCAFFE_QUIET for the process
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as e:     # argparse's usage errors
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
            except Exception:           # noqa: BLE001 - as the interpreter ends on one: its traceback, status 1
                traceback.print_exc()
                code = 1
    finally:
        os.environ.clear()
        os.environ.update(saved)
    r = subprocess.CompletedProcess(["zfcaffe", *argv], code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"zfcaffe {' '.join(argv)} exited {code}:\n{r.stderr}")
    return r
