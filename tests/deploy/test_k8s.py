"""deploy/k8s: the manifests validate against the Kubernetes API schema
(1.29+, with native sidecars), agree with each other and with the daemon,
keep secrets out of the ConfigMap, and the sidecar pod really runs: under
`podman kube play`, ferryd from deploy/Containerfile beside a redis-server
and an app container that talks to it over the shared socket."""

import base64
import copy
import json
import os
import re
import subprocess
import time

import pytest
import yaml

from conftest import K8S, ROOT, load_all, manifests, podman

VALIDATOR = os.path.join(K8S, "validate", "validate.mjs")
SOCKET = "/run/ferry/ferry.sock"


def validate(*files):
    assert os.path.isdir(os.path.join(K8S, "validate", "node_modules")), \
        "the validator is not installed: make k8s-validate-deps"
    r = subprocess.run(["node", VALIDATOR] + list(files), capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout


def obj(kind, path):
    found = [d for p, d in manifests() if d["kind"] == kind and p == os.path.join(K8S, path)]
    assert len(found) == 1, (kind, path)
    return found[0]


def deployment():
    return obj("Deployment", "deployment.yaml")


def daemonset():
    return obj("DaemonSet", "daemonset/daemonset.yaml")


def ferryd_container(workload):
    spec = workload["spec"]["template"]["spec"]
    found = [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == "ferryd"]
    assert len(found) == 1
    return found[0]


def configmap_conf():
    text = obj("ConfigMap", "base/configmap.yaml")["data"]["ferryd.conf"]
    return dict(re.findall(r"^(\w+) = (.*)$", text, re.M))


def ferryd_keys():
    out = subprocess.run([os.path.join(ROOT, "build", "ferryd"), "--print-config"], capture_output=True,
                         text=True, check=True).stdout
    return set(re.findall(r"^(\w+) = ", out, re.M))


def test_every_manifest_validates_against_the_api_schema():
    files = sorted({p for p, _ in manifests()})
    code, out = validate(*files)
    assert code == 0, out
    # One "ok" line per object, and the summary names them all.
    assert out.count("\nok ") + out.startswith("ok ") == len(manifests()), out
    assert out.rstrip().endswith("%d passed, 0 failed" % len(manifests())), out


def test_the_validator_refuses_what_the_api_server_refuses(tmp_path):
    """Unknown fields (strict field validation), wrong types and missing
    required fields, in a copy of the real Deployment."""
    bad = copy.deepcopy(deployment())
    sidecar = bad["spec"]["template"]["spec"]["initContainers"][0]
    sidecar["restartPolicyy"] = "Always"
    sidecar["securityContext"]["runAsNonRoot"] = "yes"
    del bad["spec"]["selector"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    code, out = validate(str(path))
    assert code == 1 and "0 passed, 1 failed" in out, out
    assert "initContainers/0/restartPolicyy: unknown field" in out
    assert "runAsNonRoot must be boolean" in out and "must have required property selector" in out, out


def test_kustomizations_name_every_manifest():
    listed = set()
    for top, _, files in os.walk(K8S):
        if "kustomization.yaml" in files and "node_modules" not in top:
            k = load_all(os.path.join(top, "kustomization.yaml"))[0]
            assert k["kind"] == "Kustomization"
            for r in k["resources"]:
                path = os.path.normpath(os.path.join(top, r))
                assert os.path.exists(path), path
                listed.add(path)
    files = {p for p, _ in manifests()}
    assert files <= listed, files - listed


def test_the_sidecar_is_native():
    spec = deployment()["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["initContainers"]] == ["ferryd"]
    assert spec["initContainers"][0]["restartPolicy"] == "Always"
    assert "ferryd" not in [c["name"] for c in spec["containers"]]


@pytest.mark.parametrize("workload,app,same_pod", [
    (deployment, deployment, True),
    (daemonset, lambda: obj("Deployment", "daemonset/app.yaml"), False)])
def test_the_socket_path_agrees_everywhere(workload, app, same_pod):
    sock = configmap_conf()["socket"]
    assert sock == SOCKET
    sock_dir = os.path.dirname(sock)
    w = workload()
    f = ferryd_container(w)
    vols = {v["name"]: v for v in w["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in f["volumeMounts"]}
    assert sock_dir in mounts and mounts["/etc/ferry"] == "ferryd-config"
    assert f["args"] == ["--config", "/etc/ferry/ferryd.conf"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        cmd = f[probe]["exec"]["command"]
        assert cmd[cmd.index("--socket") + 1] == sock, probe
    a = app()
    spec = a["spec"]["template"]["spec"]
    c = [c for c in spec["containers"] if c["name"] == "app"][0]
    assert {e["name"]: e.get("value") for e in c["env"]}["FERRY_SOCKET"] == sock
    app_mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    app_vols = {v["name"]: v for v in spec["volumes"]}
    # The same volume: one emptyDir in one pod, or one host directory.
    if same_pod:
        assert app_mounts[sock_dir] == mounts[sock_dir] and "emptyDir" in vols[mounts[sock_dir]]
    else:
        assert app_vols[app_mounts[sock_dir]]["hostPath"]["path"] == vols[mounts[sock_dir]]["hostPath"]["path"]
    # The socket is 0660, ferryd's group 10001; the app must be in it.
    assert configmap_conf()["socket_mode"] == "0660"
    assert 10001 in spec["securityContext"]["supplementalGroups"]


def test_no_secret_in_the_configmap():
    secret = obj("Secret", "base/secret.yaml")
    values = list(secret["stringData"].values())
    cm = yaml.safe_dump(obj("ConfigMap", "base/configmap.yaml"))
    for v in values:
        assert v not in cm
        # Not even the password part of the URL.
        password = re.match(r"\w+://[^:]*:([^@]+)@", v).group(1)
        assert password not in cm
    assert "redis_url" not in configmap_conf() and "amqp_url" not in configmap_conf()
    # The Secret's keys are what ferryd reads: FERRY_ + a key it knows.
    keys = ferryd_keys()
    for name in secret["stringData"]:
        assert name.startswith("FERRY_") and name[6:].lower() in keys, name
    for w in (deployment(), daemonset()):
        env = {e["name"]: e for e in ferryd_container(w)["env"]}
        for name in secret["stringData"]:
            ref = env[name]["valueFrom"]["secretKeyRef"]
            assert (ref["name"], ref["key"]) == (secret["metadata"]["name"], name)
    # And every key the ConfigMap sets is one ferryd knows.
    assert set(configmap_conf()) <= keys


def test_hardening_of_every_ferryd_container():
    for w in (deployment(), daemonset()):
        spec = w["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        sc = ferryd_container(w)["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
        assert sc["seccompProfile"]["type"] == "RuntimeDefault"


def test_telemetry_resource_attributes_come_from_the_downward_api():
    want = {"k8s.pod.name": "metadata.name", "k8s.namespace.name": "metadata.namespace",
            "k8s.node.name": "spec.nodeName", "k8s.pod.uid": "metadata.uid"}
    for w in (deployment(), daemonset()):
        env = ferryd_container(w)["env"]
        names = [e["name"] for e in env]
        byname = {e["name"]: e for e in env}
        attrs = dict(kv.split("=", 1) for kv in byname["OTEL_RESOURCE_ATTRIBUTES"]["value"].split(","))
        for attr, field in want.items():
            var = re.fullmatch(r"\$\((\w+)\)", attrs[attr]).group(1)
            assert byname[var]["valueFrom"]["fieldRef"]["fieldPath"] == field
            # $(VAR) expands only variables defined before it.
            assert names.index(var) < names.index("OTEL_RESOURCE_ATTRIBUTES")
        assert re.fullmatch(r"http://[\w.-]+\.svc\.cluster\.local:4318",
                            byname["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"])


def test_resources_cover_the_measured_footprint():
    """The memory limit holds the RSS measured in docs/performance.md plus
    what the ConfigMap lets ferryd buffer (max_buffered): past that ferryd
    cuts a client off itself instead of being OOM-killed."""
    perf = open(os.path.join(ROOT, "docs", "performance.md")).read()
    rss = [int(k) for k in re.findall(r"after the run: ferryd (\d+) KiB", perf)]
    assert rss
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
    qty = lambda s: int(s[:-2]) * units[s[-2:]]
    buffered = int(configmap_conf()["max_buffered"])
    for w in (deployment(), daemonset()):
        res = ferryd_container(w)["resources"]
        assert qty(res["requests"]["memory"]) >= max(rss) * 1024
        assert qty(res["limits"]["memory"]) >= max(rss) * 1024 + buffered
        assert res["requests"]["cpu"].endswith("m")
    # The drain fits in the grace period, with the last telemetry's 3 s.
    drain = int(configmap_conf()["drain_timeout_ms"]) / 1000
    for w in (deployment(), daemonset()):
        assert w["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= drain + 3


# ---- the pod, under podman kube play ----------------------------------

# A native sidecar's startupProbe holds the app back until ferryd answers;
# podman runs the sidecar as a plain container, so the app waits itself,
# and for Redis too, which starts beside it here (`ferry health`: ready).
# (Plain: podman 4.3's YAML handling trips on some shell punctuation in
# a string, such as braces.)
APP_SCRIPT = """set -e
i=0
until ferry health >/dev/null 2>&1; do
  i=$((i+1)); test $i -lt 300; sleep 0.1
done
ferry redis SET pod:roundtrip "set by the app container"
ferry redis GET pod:roundtrip
ferry health
echo "app: done"
"""


UNSUPPORTED_FIELDS = {"spec.nodeName": "podman-host", "metadata.namespace": "default"}


def podman_pod(images, name):
    """The Deployment's pod, as podman 4.3 can run it. Each change is one
    podman cannot do or the test needs, and is said here:
    - podman has no native sidecars (it would run the init container to
      completion first), so ferryd moves to `containers`, first;
    - a redis-server container joins the pod (containers share localhost);
    - the app is the ferryd image running a script with the ferry CLI,
      and the pod does not restart it when the script ends;
    - spec.nodeName and metadata.namespace are not offered by podman's
      downward API: literals;
    - the collector is a local port with nothing behind it, so the last
      export fails at once instead of waiting on DNS."""
    pod = as_pod(deployment(), name, images, [redis_container(images)])
    spec = pod["spec"]
    sidecars = [c for c in spec.pop("initContainers") if c.pop("restartPolicy", None) == "Always"]
    spec["containers"] = sidecars + spec["containers"]
    for c in spec["containers"]:
        if c["name"] == "app":
            c["image"] = images["ferryd"]
            c["command"] = ["/bin/sh", "-c", APP_SCRIPT]
    return pod


def as_pod(workload, name, images, extra_containers=()):
    """A workload's pod template as a Pod that podman can play: images of
    this run, the downward API fields podman lacks as literals, the
    collector a local port with nothing behind it (see podman_pod)."""
    spec = copy.deepcopy(workload["spec"]["template"]["spec"])
    spec["restartPolicy"] = "Never"
    for c in spec.get("initContainers", []) + spec["containers"]:
        if c["image"] == "ferryd":
            c["image"] = images["ferryd"]
        for e in c.get("env", []):
            field = e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
            if field in UNSUPPORTED_FIELDS:
                del e["valueFrom"]
                e["value"] = UNSUPPORTED_FIELDS[field]
            if e["name"] == "OTEL_EXPORTER_OTLP_ENDPOINT":
                e["value"] = "http://127.0.0.1:4318"
    spec["containers"] += list(extra_containers)
    return {"apiVersion": "v1", "kind": "Pod", "spec": spec,
            "metadata": {"name": name, "labels": workload["spec"]["template"]["metadata"]["labels"]}}


def redis_container(images):
    return {"name": "redis", "image": images["redis"],
            "securityContext": {"runAsUser": 10003, "runAsGroup": 10003, "readOnlyRootFilesystem": True,
                                "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}


def create_secret(tmp_path):
    """The Secret as podman keeps it (a JSON map of base64 values), with the
    pod's own redis-server in place of the example's URL; the AMQP URL is
    left out, as the manifests allow (optional: true)."""
    name = obj("Secret", "base/secret.yaml")["metadata"]["name"]
    data = {"FERRY_REDIS_URL": base64.b64encode(b"redis://127.0.0.1:6379/0").decode()}
    (tmp_path / "secret.json").write_text(json.dumps(data))
    podman("secret", "rm", name, check=False)
    podman("secret", "create", name, str(tmp_path / "secret.json"))
    return name


def wait_exited(container, tries=600):
    # Bounded by a count, not a clock: it only keeps a broken pod from
    # hanging the run.
    for _ in range(tries):
        state = podman("inspect", container, "--format", "{{.State.Status}}").stdout.strip()
        if state in ("exited", "stopped"):
            return
        time.sleep(0.1)
    raise AssertionError(container + " did not finish: " + podman("logs", container, check=False).stdout)


def test_the_sidecar_pod_runs_under_podman(images, tmp_path):
    name = "ferry-k8s-%d" % os.getpid()
    # JSON is YAML, and podman's parser takes it where PyYAML's block scalars trip it.
    (tmp_path / "pod.yaml").write_text(json.dumps(podman_pod(images, name)))
    secret_name = create_secret(tmp_path)
    try:
        podman("kube", "play", "--configmap", os.path.join(K8S, "base", "configmap.yaml"),
               str(tmp_path / "pod.yaml"))
        wait_exited(name + "-app")
        app = podman("logs", name + "-app")
        assert app.stdout == "OK\nset by the app container\nready\nredis: up\napp: done\n", app.stdout + app.stderr

        # The config came from the ConfigMap, the URL from the Secret, the
        # pod's name through the downward API.
        env = podman("exec", name + "-ferryd", "sh", "-c", "cat /etc/ferry/ferryd.conf; env").stdout
        assert "max_buffered = %s\n" % configmap_conf()["max_buffered"] in env
        assert "FERRY_REDIS_URL=redis://127.0.0.1:6379/0\n" in env
        assert "K8S_POD_NAME=%s\n" % name in env

        # ferryd's resident memory in the pod, telemetry on (libcurl loaded),
        # after the round trip, fits the container's memory request.
        res = ferryd_container(deployment())["resources"]
        rss = podman("exec", name + "-ferryd", "sh", "-c", "grep VmRSS /proc/1/status").stdout
        kib = int(re.search(r"VmRSS:\s+(\d+) kB", rss).group(1))
        print("ferryd in the pod: VmRSS %d KiB" % kib)
        assert kib * 1024 <= int(res["requests"]["memory"][:-2]) << 20, rss

        # Every probe of the manifest, run where the kubelet would run it.
        f = ferryd_container(deployment())
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            r = podman("exec", name + "-ferryd", *f[probe]["exec"]["command"], check=False)
            assert r.returncode == 0, (probe, r.stdout, r.stderr)
        # Without Redis, the pod is not ready but still alive: readiness
        # fails, liveness (and startup) do not, so no restart is asked for.
        podman("stop", "-t", "5", name + "-redis")
        for _ in range(300):
            r = podman("exec", name + "-ferryd", *f["readinessProbe"]["exec"]["command"], check=False)
            if r.returncode == 1:
                break
            time.sleep(0.1)
        assert r.returncode == 1 and "redis: down" in r.stdout + r.stderr, r.stdout + r.stderr
        r = podman("exec", name + "-ferryd", *f["livenessProbe"]["exec"]["command"], check=False)
        assert r.returncode == 0, r.stdout + r.stderr

        # Stopping the pod sends SIGTERM: ferryd drains and exits 0.
        podman("pod", "stop", "-t", "15", name)
        log = podman("logs", name + "-ferryd").stderr + podman("logs", name + "-ferryd").stdout
        assert re.search(r"info: SIGTERM: draining \(\d+ clients, 0 requests in flight", log), log
        assert log.rstrip().endswith("info: exited"), log
        assert podman("inspect", name + "-ferryd", "--format", "{{.State.ExitCode}}").stdout.strip() == "0"
    finally:
        podman("kube", "down", str(tmp_path / "pod.yaml"), check=False)
        podman("secret", "rm", secret_name, check=False)


def test_the_daemonset_pod_serves_another_pod_through_the_host_socket(images, tmp_path):
    """The DaemonSet's pod and an app pod of daemonset/app.yaml, two pods
    with two network namespaces: only the hostPath directory joins them.
    The root init container gives the directory to ferryd's user; the app
    mounts it read-only and reaches the socket through group 10001."""
    name = "ferry-ds-%d" % os.getpid()
    host_dir = tmp_path / "node-run-ferry"     # the node's /run/ferry
    ds = as_pod(daemonset(), name, images, [redis_container(images)])
    app = as_pod(obj("Deployment", "daemonset/app.yaml"), name + "-app", images)
    for pod in (ds, app):
        for v in pod["spec"]["volumes"]:
            if "hostPath" in v:
                v["hostPath"]["path"] = str(host_dir)
    # The app: the ferryd image running the script with the ferry CLI.
    app["spec"]["containers"][0].update(image=images["ferryd"], command=["/bin/sh", "-c", APP_SCRIPT])
    (tmp_path / "ds.yaml").write_text(json.dumps(ds))
    (tmp_path / "app.yaml").write_text(json.dumps(app))
    secret_name = create_secret(tmp_path)
    try:
        podman("kube", "play", "--configmap", os.path.join(K8S, "base", "configmap.yaml"),
               str(tmp_path / "ds.yaml"))
        st = os.stat(host_dir)
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (10001, 10001, 0o750)
        podman("kube", "play", str(tmp_path / "app.yaml"))
        wait_exited(name + "-app-app")
        out = podman("logs", name + "-app-app")
        assert out.stdout == "OK\nset by the app container\nready\nredis: up\napp: done\n", out.stdout + out.stderr
        # The app's mount is read-only: it reaches the socket, and nothing more.
        r = podman("run", "--rm", "--user", "10002:10002", "--group-add", "10001", "-v",
                   "%s:/run/ferry:ro" % host_dir, "--entrypoint", "/bin/sh", images["ferryd"], "-c",
                   "ferry ping; touch /run/ferry/x", check=False)
        assert r.stdout == "PONG\n" and "Read-only file system" in r.stderr, r.stdout + r.stderr
        podman("pod", "stop", "-t", "15", name)
        log = podman("logs", name + "-ferryd").stderr
        assert "info: SIGTERM: draining" in log and log.rstrip().endswith("info: exited"), log
        assert not os.path.exists(host_dir / "ferry.sock")     # removed by the drain
    finally:
        podman("kube", "down", str(tmp_path / "app.yaml"), check=False)
        podman("kube", "down", str(tmp_path / "ds.yaml"), check=False)
        podman("secret", "rm", secret_name, check=False)
