"""The Ray engine on a real two-node Ray cluster gives exactly the local engine's
results (zfcaffe.scan).

The cluster runs inside a network namespace of its own that has nothing but a
loopback interface (`unshare --net`): both nodes, the driver and every Ray process
listen on 127.0.0.1 and cannot reach any other address. The test starts the nodes
and stops them at the end."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys

import numpy as np
import pytest

from cli_here import cli_here as run_cli   # in-process: the local reference runs need no fresh interpreter
from shapes import make_shapes

pytest.importorskip("ray")
pytest.importorskip("pyarrow")

CLUSTER = r"""
set -u
ip link set lo up
export RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=token   # RAY_AUTH_TOKEN: a fresh one from the test
trap 'ray stop --force >/dev/null 2>&1' EXIT
common="--node-ip-address=127.0.0.1 --num-cpus=1 --object-store-memory=100000000 --disable-usage-stats"
ray start --head --port=6379 --include-dashboard=false $common >head.log 2>&1 || { cat head.log; exit 3; }
ray start --address=127.0.0.1:6379 $common >worker.log 2>&1 || { cat worker.log; exit 3; }
"$PYTHON" -c 'import ray; ray.init(address="127.0.0.1:6379", logging_level="ERROR"); print("nodes", sum(n["Alive"] for n in ray.nodes()))'
"$PYTHON" -m zfcaffe top9 $NET --images "$IMAGES" --layers conv1,conv3 --batch 8 -o ray-top9 \
    --engine ray --address 127.0.0.1:6379 --actors 2 || exit 4
"$PYTHON" -m zfcaffe features $NET --images "$IMAGES" --batch 8 -o ray-features \
    --engine ray --address 127.0.0.1:6379 --actors 2 || exit 5
"$PYTHON" -m zfcaffe occlusion $NET --images "$IMAGES" --size 8 --stride 4 -o ray-occlusion \
    --engine ray --address 127.0.0.1:6379 --actors 2 || exit 6
"$PYTHON" -m zfcaffe features $NET --images "$BAD" -o bad-features --engine ray --address 127.0.0.1:6379 \
    2>bad.err; echo "bad input: rc $?"
ss -ltnH | awk '{print $4}' > listening.txt
"""


def _can_unshare() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "--net", "true"], capture_output=True).returncode == 0


def test_top9_features_and_occlusion_on_a_two_node_ray_cluster_equal_the_local_engine(shared, tmp_path):
    if not _can_unshare():
        if os.environ.get("CI"):
            pytest.fail("unshare --net is not permitted here, and CI must run the Ray cluster test")
        pytest.skip("unshare --net (a private network namespace for the Ray cluster) needs root")
    images = tmp_path / "images"
    make_shapes(images, per_class=12)
    m = shared / "models/cifar10_quick"
    net = [m / "cifar10_quick.prototxt", m / "cifar10_quick_iter_4000.caffemodel", "--mean", m / "mean.binaryproto",
           "--quiet"]
    run_cli("top9", *net, "--images", images, "--layers", "conv1,conv3", "--batch", "8", "-o", tmp_path / "top9")
    run_cli("features", *net, "--images", images, "--batch", "8", "-o", tmp_path / "features")
    run_cli("occlusion", *net, "--images", images, "--size", "8", "--stride", "4", "-o", tmp_path / "occlusion")
    bad = tmp_path / "bad"      # a worker's project error comes back as the local engine says it
    bad.mkdir()
    shutil.copy(next(images.glob("disc/*.png")), bad / "a.png")
    (bad / "b.png").write_bytes(b"not an image")
    env = dict(os.environ, PYTHON=sys.executable, IMAGES=str(images), NET=" ".join(map(str, net)), BAD=str(bad),
               RAY_AUTH_TOKEN=secrets.token_hex(32))
    r = subprocess.run(["unshare", "--net", "bash", "-c", CLUSTER], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "nodes 2" in r.stdout and "bad input: rc 2" in r.stdout
    assert f"zfcaffe: error: {bad / 'b.png'}: cannot read image" in (tmp_path / "bad.err").read_text()
    listening = (tmp_path / "listening.txt").read_text().split()
    assert listening and all(a.rsplit(":", 1)[0] in ("127.0.0.1", "[::ffff:127.0.0.1]", "[::1]") for a in listening)
    for verb in ("top9", "occlusion"):
        local, ray = np.load(tmp_path / verb / "results.npz"), np.load(tmp_path / f"ray-{verb}/results.npz")
        assert sorted(local.files) == sorted(ray.files)
        for key in local.files:
            assert np.array_equal(local[key], ray[key]), (verb, key)
    manifest = json.loads((tmp_path / "features/_manifest.json").read_text())
    assert manifest == json.loads((tmp_path / "ray-features/_manifest.json").read_text())
    for shard in manifest["shards"]:
        assert (tmp_path / "features" / shard["file"]).read_bytes() == \
            (tmp_path / "ray-features" / shard["file"]).read_bytes()
