"""Shared by the deployment tests: the manifests, read once, and podman
with this tree's containers.conf. The images (ferryd's from
deploy/Containerfile, a redis-server one) are built once per run on
debootstrap-made Debian base images; podman's layer cache makes a rebuild
with unchanged sources take seconds, and the base images are made only
when missing (deploy/base-images.sh)."""

import os
import shutil
import subprocess

import pytest
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
K8S = os.path.join(ROOT, "deploy", "k8s")
CONTAINERS_CONF = os.path.join(ROOT, "deploy", "containers.conf")
FERRYD_IMAGE = "localhost/ferryd:test"
REDIS_IMAGE = "localhost/ferry-test-redis:bookworm"


def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def manifests():
    """Every Kubernetes object under deploy/k8s, as (file, object); the
    kustomizations (kustomize's, not the API's) are left out."""
    out = []
    for top, _, files in os.walk(K8S):
        if "node_modules" in top:
            continue
        for name in sorted(files):
            if name.endswith(".yaml") and name != "kustomization.yaml":
                path = os.path.join(top, name)
                out += [(path, d) for d in load_all(path)]
    return out


def podman(*args, check=True, timeout=600, **kw):
    env = dict(os.environ, CONTAINERS_CONF=CONTAINERS_CONF)
    r = subprocess.run(["podman"] + list(args), capture_output=True, text=True, env=env,
                       timeout=timeout, **kw)
    if check:
        assert r.returncode == 0, "podman %s: %s%s" % (" ".join(args), r.stdout, r.stderr)
    return r


@pytest.fixture(scope="session")
def images():
    """ferryd's image and the redis one, built (or found in the cache)."""
    if not shutil.which("podman"):
        pytest.fail("podman is missing: make deps installs it")
    r = subprocess.run([os.path.join(ROOT, "deploy", "base-images.sh")], capture_output=True, text=True,
                       env=dict(os.environ, CONTAINERS_CONF=CONTAINERS_CONF), timeout=900)
    assert r.returncode == 0, r.stderr
    podman("build", "--pull=never", "--network", "host", "-f", os.path.join(ROOT, "deploy", "Containerfile"),
           "-t", FERRYD_IMAGE, ROOT, timeout=1800)
    podman("build", "--pull=never", "--network", "host", "-f", os.path.join(HERE, "Containerfile.redis"),
           "-t", REDIS_IMAGE, HERE, timeout=900)
    return {"ferryd": FERRYD_IMAGE, "redis": REDIS_IMAGE}
