"""deploy/: the Kubernetes manifests, the image recipe and its scripts.

* every manifest validates against the Kubernetes schemas, strictly (unknown
  fields fail): current releases with kubernetes-validate, 1.20 (the sandbox
  cluster) with the schemas in schemas/ and jsonschema;
* the ConfigMap's controller YAML passes controller.config.parse, and the
  DaemonSet's mounts cover every path that configuration and the installed
  conflist name (the shim on the host and the controller in its container must
  see the same socket and state directory);
* RBAC is read-only except the Node patches docs/deploy.md justifies;
* containers have requests, limits and probes; the Dockerfile copies what exists;
* install-cni.sh and ovs-start.sh do what the DaemonSet relies on, run for real
  (ovs-start.sh needs the OVS binaries; the chroot check needs root and busybox).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils

from cni import install
from controller import config as controller_config
from sandbox.ovs import binaries_missing

REPO = Path(__file__).resolve().parents[3]
DEPLOY = REPO / "deploy"
KUSTOMIZE = DEPLOY / "kubernetes"
SCHEMAS_1_20 = Path(__file__).with_name("schemas") / "k8s-v1.20.0-strict.json"
IMAGE = "localhost/sluice/sluice:latest"
CONFIG_KEY = "controller.yaml"
CURRENT_VERSIONS = ("1.30", kv_utils.latest_version())
READ_ONLY = {"get", "list", "watch"}
# (apiGroup, resource) -> verbs beyond READ_ONLY, each justified in rbac.yaml and docs/deploy.md.
JUSTIFIED_WRITES = {("", "nodes"): {"patch"}, ("", "nodes/status"): {"patch"}}
WATCHED = {
    ("", "nodes"),
    ("", "pods"),
    ("", "namespaces"),
    ("", "services"),
    ("discovery.k8s.io", "endpointslices"),
    ("networking.k8s.io", "networkpolicies"),
}
SCRIPTS = ("install-cni.sh", "ovs-start.sh", "bundle-host-python.sh")


# -- loading ------------------------------------------------------------------


def _kustomization() -> dict[str, Any]:
    return yaml.safe_load((KUSTOMIZE / "kustomization.yaml").read_text())


def _documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for name in _kustomization()["resources"]:
        for doc in yaml.safe_load_all((KUSTOMIZE / name).read_text()):
            if doc:
                docs.append((name, doc))
    return docs


def _one(kind: str) -> dict[str, Any]:
    found = [doc for _, doc in _documents() if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _config_text() -> str:
    return _one("ConfigMap")["data"][CONFIG_KEY]


def _config() -> controller_config.Config:
    return controller_config.parse(yaml.safe_load(_config_text()))


def _pod() -> dict[str, Any]:
    return _one("DaemonSet")["spec"]["template"]["spec"]


def _container(name: str) -> dict[str, Any]:
    pod = _pod()
    found = [c for c in pod["containers"] + pod.get("initContainers", []) if c["name"] == name]
    assert len(found) == 1, f"no container {name}"
    return found[0]


def _host_path(container: dict[str, Any], path: str) -> str | None:
    """The host path that `path` inside `container` is, through its hostPath mounts."""
    volumes = {v["name"]: v for v in _pod()["volumes"]}
    best: tuple[str, dict[str, Any]] | None = None
    for mount in container.get("volumeMounts", []):
        where = mount["mountPath"].rstrip("/")
        if (path == where or path.startswith(where + "/")) and (
            best is None or len(where) > len(best[0])
        ):
            best = (where, mount)
    if best is None:
        return None
    where, mount = best
    host = volumes[mount["name"]].get("hostPath")
    return None if host is None else host["path"].rstrip("/") + path[len(where) :]


def _mount(container: dict[str, Any], path: str) -> dict[str, Any]:
    found = [m for m in container.get("volumeMounts", []) if m["mountPath"] == path]
    assert found, f"{container['name']} has no mount at {path}"
    return found[0]


# -- the kustomization ----------------------------------------------------------


def test_kustomization_lists_every_manifest() -> None:
    listed = _kustomization()["resources"]
    present = sorted(p.name for p in KUSTOMIZE.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == present
    assert {"namespace.yaml", "rbac.yaml", "configmap.yaml", "daemonset.yaml"} <= set(listed)


def test_kustomize_image_override_names_the_manifests_image() -> None:
    names = {entry["name"] for entry in _kustomization()["images"]}
    assert IMAGE.rsplit(":", 1)[0] in names


def test_everything_lives_in_sluice_system() -> None:
    assert _one("Namespace")["metadata"]["name"] == "sluice-system"
    for name, doc in _documents():
        if doc["kind"] not in {"Namespace", "ClusterRole", "ClusterRoleBinding"}:
            assert doc["metadata"].get("namespace") == "sluice-system", (name, doc["kind"])


# -- schemas ------------------------------------------------------------------


@pytest.mark.parametrize("version", CURRENT_VERSIONS)
def test_manifests_validate_against_current_kubernetes(version: str) -> None:
    for name, doc in _documents():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{name} {doc['kind']} invalid for {version}: {where}: {exc.message}")


def test_manifests_validate_against_kubernetes_1_20() -> None:
    bundle = json.loads(SCHEMAS_1_20.read_text())
    for name, doc in _documents():
        key = f"{doc['apiVersion']} {doc['kind']}"
        assert key in bundle["kinds"], f"{name}: {key} missing from {SCHEMAS_1_20.name}"
        schema = {
            "$ref": f"#/definitions/{bundle['kinds'][key]}",
            "definitions": bundle["definitions"],
        }
        errors = list(jsonschema.Draft4Validator(schema).iter_errors(doc))
        assert not errors, [f"{name} {'.'.join(map(str, e.path))}: {e.message}" for e in errors]


def test_1_20_schemas_reject_fields_newer_than_1_20() -> None:
    """The 1.20 check is strict: DaemonSet maxSurge only arrived in 1.21."""
    doc = json.loads(json.dumps(_one("DaemonSet")))
    doc["spec"]["updateStrategy"]["rollingUpdate"]["maxSurge"] = 0
    bundle = json.loads(SCHEMAS_1_20.read_text())
    schema = {
        "$ref": f"#/definitions/{bundle['kinds']['apps/v1 DaemonSet']}",
        "definitions": bundle["definitions"],
    }
    assert not jsonschema.Draft4Validator(schema).is_valid(doc)
    kubernetes_validate.validate(doc, CURRENT_VERSIONS[0], strict=True)


# -- the controller configuration ---------------------------------------------------


def test_configmap_config_passes_the_controllers_parser() -> None:
    cfg = _config()
    assert cfg.mode == "overlay"
    assert cfg.datapath_type == "auto"
    # One ConfigMap for every node: these come from the Node and $NODE_NAME.
    assert cfg.node_name is None
    assert cfg.pod_cidr is None
    assert cfg.kubeconfig is None


def test_configmap_documents_its_keys() -> None:
    assert _config_text().count("#") >= 5


# -- RBAC ----------------------------------------------------------------------


def _rules() -> dict[tuple[str, str], set[str]]:
    verbs: dict[tuple[str, str], set[str]] = {}
    for rule in _one("ClusterRole")["rules"]:
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                verbs.setdefault((group, resource), set()).update(rule["verbs"])
    return verbs


def test_rbac_is_read_only_except_justified_node_patches() -> None:
    for (group, resource), verbs in _rules().items():
        assert "*" not in verbs and group != "*" and resource != "*"
        extra = verbs - READ_ONLY
        assert extra <= JUSTIFIED_WRITES.get((group, resource), set()), (group, resource, extra)
        assert resource not in {"secrets", "configmaps"}, "the controller reads no secrets"


def test_rbac_covers_what_the_controller_watches() -> None:
    rules = _rules()
    for key in WATCHED:
        assert rules.get(key, set()) >= READ_ONLY, key


def test_rbac_binds_the_daemonsets_service_account() -> None:
    account = _one("ServiceAccount")["metadata"]
    subject = {"kind": "ServiceAccount", "name": account["name"], "namespace": "sluice-system"}
    binding = _one("ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": _one("ClusterRole")["metadata"]["name"],
    }
    assert account["namespace"] == "sluice-system"
    assert subject in binding["subjects"]
    assert _pod()["serviceAccountName"] == account["name"]


# -- the DaemonSet --------------------------------------------------------------------


def test_daemonset_runs_on_every_node_with_the_hosts_network() -> None:
    ds = _one("DaemonSet")
    pod = _pod()
    assert ds["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1},
    }
    assert pod["hostNetwork"] is True
    assert pod["hostPID"] is True
    assert pod["priorityClassName"] == "system-node-critical"
    assert {"operator": "Exists"} in pod["tolerations"], "must tolerate every taint"
    labels = ds["spec"]["template"]["metadata"]["labels"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_every_container_uses_the_image_without_pulling_it() -> None:
    pod = _pod()
    for container in pod["containers"] + pod["initContainers"]:
        assert container["image"] == IMAGE
        assert container["imagePullPolicy"] == "IfNotPresent", container["name"]


def test_every_container_has_requests_and_limits() -> None:
    pod = _pod()
    for container in pod["containers"] + pod["initContainers"]:
        resources = container["resources"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= resources[kind].keys(), (container["name"], kind)


def test_long_running_containers_have_probes() -> None:
    for container in _pod()["containers"]:
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert probe in container, (container["name"], probe)


def test_controller_probes_are_the_rest_endpoints_of_the_config() -> None:
    rest = _config().rest
    controller = _container("sluice-controller")
    for probe, path in (
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ):
        action = controller[probe]["httpGet"]
        assert (action["host"], action["port"], action["path"]) == (rest.host, rest.port, path)


def test_controller_knows_its_node_name() -> None:
    env = {e["name"]: e for e in _container("sluice-controller")["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    command = _container("sluice-controller")["command"]
    assert command[0] == "sluice-controller"
    assert command[command.index("--config") + 1] == f"/etc/sluice/{CONFIG_KEY}"
    assert _mount(_container("sluice-controller"), "/etc/sluice")["readOnly"] is True


def test_controller_sees_the_host_paths_of_its_config() -> None:
    """Same path in the container as on the host: the shim runs on the host."""
    cfg = _config()
    controller = _container("sluice-controller")
    assert cfg.ovsdb.startswith("unix:")
    for path in (
        os.path.dirname(cfg.cni.server_socket),
        cfg.cni.state_dir,
        f"{cfg.cni.state_dir}/ipam",
        cfg.cni.bin_dir,  # the runtime's CNI_PATH: host-local runs from there
        os.path.dirname(cfg.ovsdb.removeprefix("unix:")),
        "/var/run/netns",
    ):
        assert _host_path(controller, path) == path, path
    assert _mount(controller, "/var/run/netns")["mountPropagation"] == "HostToContainer"


def test_openvswitch_keeps_its_state_on_the_host() -> None:
    ovs = _container("openvswitch")
    for path in ("/var/run/openvswitch", "/etc/openvswitch", "/var/log/openvswitch"):
        assert _host_path(ovs, path) == path
    assert _config().ovsdb == "unix:/var/run/openvswitch/db.sock"


def test_openvswitch_reads_the_mode_for_its_userspace_tso_default() -> None:
    """ovs-start.sh decides userspace TSO from the controller's mode (controller/tso.py)."""
    ovs = _container("openvswitch")
    env = {e["name"]: e.get("value") for e in ovs["env"]}
    assert env["SLUICE_USERSPACE_TSO"] == "auto"
    assert env["SLUICE_CONFIG"] == f"/etc/sluice/{CONFIG_KEY}"
    assert _mount(ovs, "/etc/sluice")["readOnly"] is True


def test_init_container_installs_into_the_configured_host_dirs() -> None:
    cfg = _config()
    init = _container("install-cni")
    env = {e["name"]: e.get("value") for e in init["env"]}
    root = env["SLUICE_HOST_ROOT"]
    assert env["SLUICE_CONFIG"] == f"/etc/sluice/{CONFIG_KEY}"
    for path in (cfg.cni.bin_dir, cfg.cni.conf_dir, "/opt/sluice"):
        assert _host_path(init, root + path) == path
    assert init["command"] == ["/usr/local/bin/install-cni.sh"]


def test_every_hostpath_is_created_if_missing() -> None:
    for volume in _pod()["volumes"]:
        if "hostPath" in volume:
            assert volume["hostPath"]["type"] == "DirectoryOrCreate", volume["name"]


# -- the image ---------------------------------------------------------------------


def _dockerfile() -> list[tuple[str, list[str]]]:
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split()[0].upper(), shlex.split(line)[1:])
        for line in lines
        if line and not line.startswith("#")
    ]


def _copies() -> list[tuple[list[str], str]]:
    out = []
    for instruction, args in _dockerfile():
        if instruction == "COPY" and not any(a.startswith("--from") for a in args):
            plain = [a for a in args if not a.startswith("--")]
            out.append((plain[:-1], plain[-1]))
    return out


def test_dockerfile_is_bookworm_slim_with_the_packages() -> None:
    froms = [args[0] for instruction, args in _dockerfile() if instruction == "FROM"]
    assert froms and all(f.startswith("debian:${DEBIAN_RELEASE}-slim") for f in froms)
    assert "ARG DEBIAN_RELEASE=bookworm" in (DEPLOY / "Dockerfile").read_text()
    installs = " ".join(
        " ".join(args) for instruction, args in _dockerfile() if instruction == "RUN"
    )
    for package in (
        "openvswitch-switch",
        "containernetworking-plugins",
        "iproute2",
        "ethtool",
        "iptables",
        "python3",
        "python3-venv",
    ):
        assert re.search(rf"\s{re.escape(package)}(\s|$)", installs), package


def test_dockerfile_copies_only_what_exists_and_is_in_the_context() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    included = [p[1:] for p in ignore if p.startswith("!")]
    copies = _copies()
    assert copies
    for sources, _ in copies:
        for source in sources:
            assert (REPO / source).exists(), source
            inner = source if (REPO / source).is_file() else f"{source}/x.py"
            assert any(fnmatch.fnmatch(inner, p) for p in included), f"{source} ignored"


def test_scripts_the_manifests_run_are_in_the_image() -> None:
    installed = {
        f"{dest.rstrip('/')}/{Path(s).name}" for sources, dest in _copies() for s in sources
    }
    pod = _pod()
    for container in pod["containers"] + pod["initContainers"]:
        commands = [container["command"]] + [
            container[p]["exec"]["command"]
            for p in ("startupProbe", "livenessProbe", "readinessProbe")
            if "exec" in container.get(p, {})
        ]
        for command in commands:
            if command[0].startswith("/usr/local/bin/"):
                assert command[0] in installed, command[0]
                assert (DEPLOY / Path(command[0]).name).exists()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "sluice-controller" in pyproject["project"]["scripts"]
    cmd = re.findall(r"^CMD (.*)$", (DEPLOY / "Dockerfile").read_text(), re.MULTILINE)
    assert json.loads(cmd[-1])[0] == "sluice-controller"


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_are_executable_bash_with_valid_syntax(script: str) -> None:
    path = DEPLOY / script
    assert path.read_text().startswith("#!/bin/bash\n")
    assert os.access(path, os.X_OK)
    subprocess.run(["bash", "-n", str(path)], check=True)


# -- install-cni.sh, run for real ----------------------------------------------------


def _host_root(tmp: Path) -> Path:
    cfg = _config()
    root = tmp / "host"
    for path in (cfg.cni.bin_dir, cfg.cni.conf_dir, "/opt/sluice"):
        (root / path.lstrip("/")).mkdir(parents=True)  # hostPath DirectoryOrCreate
    return root


def _run_install_cni(tmp: Path, root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    config = tmp / CONFIG_KEY
    config.write_text(_config_text())
    plugins = tmp / "plugins"
    plugins.mkdir(exist_ok=True)
    for name in ("host-local", "portmap", "loopback"):
        (plugins / name).write_text(f"#!/bin/sh\necho {name}\n")
    full_env = {
        "PATH": os.environ["PATH"],
        "SLUICE_HOST_ROOT": str(root),
        "SLUICE_CONFIG": str(config),
        "SLUICE_PYTHON": sys.executable,
        "SLUICE_CNI_PLUGIN_SRC": str(plugins),
        **env,
    }
    proc = subprocess.run(
        [str(DEPLOY / "install-cni.sh")],
        env=full_env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def _installed_conflist(root: Path) -> dict[str, Any]:
    cfg = _config()
    path = root / cfg.cni.conf_dir.lstrip("/") / install.CONFLIST_NAME
    return json.loads(path.read_text())


def test_install_cni_writes_the_configured_conflist_and_plugins(tmp_path: Path) -> None:
    cfg = _config()
    root = _host_root(tmp_path)
    bin_dir = root / cfg.cni.bin_dir.lstrip("/")
    (bin_dir / "portmap").write_text("#!/bin/sh\necho the node's own\n")
    _run_install_cni(tmp_path, root, SLUICE_CNI_INTERPRETER="/usr/bin/python3")

    sluice = _installed_conflist(root)["plugins"][0]
    assert sluice["type"] == "sluice"
    assert (sluice["serverSocket"], sluice["stateDir"]) == (
        cfg.cni.server_socket,
        cfg.cni.state_dir,
    )
    controller = _container("sluice-controller")
    assert _host_path(controller, os.path.dirname(sluice["serverSocket"])) == os.path.dirname(
        sluice["serverSocket"]
    )
    assert _host_path(controller, sluice["stateDir"]) == sluice["stateDir"]

    shim = bin_dir / "sluice"
    assert shim.read_text().splitlines()[0] == "#!/usr/bin/python3 -IS"
    assert os.access(shim, os.X_OK)
    assert "echo host-local" in (bin_dir / "host-local").read_text()
    assert "echo loopback" in (bin_dir / "loopback").read_text()
    assert "the node's own" in (bin_dir / "portmap").read_text(), "existing plugins are kept"
    assert not list(bin_dir.glob(".*")), "no temporary files left"


def test_install_cni_rejects_an_invalid_config(tmp_path: Path) -> None:
    root = _host_root(tmp_path)
    config = tmp_path / "bad.yaml"
    config.write_text("mode: mesh\n")
    proc = subprocess.run(
        [str(DEPLOY / "install-cni.sh")],
        env={
            "PATH": os.environ["PATH"],
            "SLUICE_HOST_ROOT": str(root),
            "SLUICE_CONFIG": str(config),
            "SLUICE_PYTHON": sys.executable,
        },
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "mode" in proc.stderr
    assert not list(root.rglob("*.conflist"))


@pytest.fixture(scope="module")
def host_python_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the Dockerfile builds: bundle-host-python.sh of this machine's python3."""
    python = Path("/usr/bin/python3")
    if not python.exists() or not shutil.which("ldd"):
        pytest.skip("needs /usr/bin/python3 and ldd")
    dest = tmp_path_factory.mktemp("bundle") / "host-python"
    subprocess.run(
        [str(DEPLOY / "bundle-host-python.sh"), str(dest), str(python)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return dest


def _version_request() -> bytes:
    return json.dumps({"cniVersion": "1.0.0", "name": "sluice", "type": "sluice"}).encode()


def test_install_cni_installs_the_host_interpreter_bundle(
    tmp_path: Path, host_python_bundle: Path
) -> None:
    root = _host_root(tmp_path)
    for _ in range(2):  # a restarted init container finds its own previous install
        _run_install_cni(tmp_path, root, SLUICE_HOST_PYTHON_BUNDLE=str(host_python_bundle))
    opt = root / "opt/sluice"
    bundle_id = (host_python_bundle / "VERSION").read_text().strip()
    assert os.readlink(opt / "python") == f"python-{bundle_id}"
    assert sorted(p.name for p in opt.iterdir()) == ["python", f"python-{bundle_id}"]

    shim = root / _config().cni.bin_dir.lstrip("/") / "sluice"
    assert shim.read_text().splitlines()[0] == "#!/opt/sluice/python/bin/python3 -IS"
    # Outside a chroot: run the bundled wrapper by its path under the fake host root.
    proc = subprocess.run(
        [str(opt / "python/bin/python3"), "-IS", str(shim)],
        input=_version_request(),
        env={"CNI_COMMAND": "VERSION"},
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert "1.0.0" in json.loads(proc.stdout)["supportedVersions"]


@pytest.mark.integration
def test_shim_runs_on_a_host_with_no_python_at_all(
    tmp_path: Path, host_python_bundle: Path
) -> None:
    """chroot into a 'host' holding only busybox sh and what install-cni.sh put there."""
    busybox = shutil.which("busybox")
    if os.geteuid() != 0 or busybox is None:
        pytest.skip("needs root (chroot) and busybox")
    if "static" not in subprocess.run(["file", busybox], capture_output=True, text=True).stdout:
        pytest.skip("busybox is not statically linked")
    root = _host_root(tmp_path)
    (root / "bin").mkdir()
    shutil.copy(busybox, root / "bin/sh")
    _run_install_cni(tmp_path, root, SLUICE_HOST_PYTHON_BUNDLE=str(host_python_bundle))
    cfg = _config()

    def run_shim(command: str, **env: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [f"{cfg.cni.bin_dir}/sluice"],
            input=_version_request(),
            env={"CNI_COMMAND": command, "CNI_PATH": cfg.cni.bin_dir, **env},
            preexec_fn=lambda: (os.chroot(root), os.chdir("/")),
            capture_output=True,
            timeout=30,
        )

    version = run_shim("VERSION")
    assert version.returncode == 0, version.stderr
    assert json.loads(version.stdout)["supportedVersions"]
    add = run_shim("ADD", CNI_CONTAINERID="c1", CNI_NETNS="/var/run/netns/x", CNI_IFNAME="eth0")
    assert json.loads(add.stdout)["code"] == 11, "no server: try again later"


# -- ovs-start.sh, run for real ------------------------------------------------------


@pytest.fixture
def ovs_start(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    missing = binaries_missing()
    if missing:
        pytest.skip(f"Open vSwitch not installed (missing: {', '.join(missing)})")
    work = tmp_path_factory.mktemp("ovs")  # short: unix socket paths <= 107 bytes
    env = {**_ovs_env(work), "NODE_NAME": "node-under-test"}
    with _running_ovs_start(work, env) as proc:
        yield {"proc": proc, "env": env, "work": work}


def _ovs_env(work: Path) -> dict[str, str]:
    """The environment that points ovs-start.sh and the OVS tools at ``work``."""
    dirs = ("OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR")
    return {**os.environ, **{k: str(work) for k in dirs}}


@contextmanager
def _running_ovs_start(work: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """ovs-start.sh in its own session, logging to ``work/start.log``; killed at exit."""
    proc = subprocess.Popen(
        [str(DEPLOY / "ovs-start.sh")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(work / "start.log").open("w"),
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # our own session, started above
            proc.wait()


def _healthy(env: dict[str, str]) -> bool:
    check = [str(DEPLOY / "ovs-start.sh"), "health"]
    return subprocess.run(check, env=env, capture_output=True, timeout=30).returncode == 0


@pytest.mark.functional
def test_ovs_start_runs_both_daemons_and_stops_on_sigterm(ovs_start: dict[str, Any]) -> None:
    proc, env, work = ovs_start["proc"], ovs_start["env"], ovs_start["work"]
    deadline = time.monotonic() + 20
    while not _healthy(env):
        assert proc.poll() is None, (work / "start.log").read_text()
        assert time.monotonic() < deadline, "ovs-start.sh never became healthy"
        time.sleep(0.2)

    def vsctl(*args: str) -> str:
        argv = ["ovs-vsctl", f"--db=unix:{work}/db.sock", *args]
        return subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout

    ids = vsctl("get", "Open_vSwitch", ".", "external_ids")
    assert "system-id=" in ids and "node-under-test" in ids
    assert "netdev" in vsctl("get", "Open_vSwitch", ".", "datapath_types")
    pids = [int((work / f"{d}.pid").read_text()) for d in ("ovsdb-server", "ovs-vswitchd")]

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"daemon {pid} outlived ovs-start.sh"
    assert not _healthy(env)


def _ovs_start_tso(work: Path, env: dict[str, str]) -> tuple[int, str]:
    """Run ovs-start.sh until healthy (or exited); return (rc or 0, other_config's TSO key)."""
    with _running_ovs_start(work, env) as proc:
        deadline = time.monotonic() + 20
        while proc.poll() is None and not _healthy(env):
            assert time.monotonic() < deadline, (work / "start.log").read_text()
            time.sleep(0.2)
        if proc.poll() is not None:
            return proc.returncode, ""
        argv = ["ovs-vsctl", f"--db=unix:{work}/db.sock", "get", "Open_vSwitch", "."]
        argv.append("other_config:userspace-tso-enable")
        got = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        return 0, got.stdout.strip().strip('"')


@pytest.mark.functional
@pytest.mark.parametrize(
    ("mode", "setting", "want"),
    [
        ("routing", "auto", (0, "true")),
        ("overlay", "auto", (0, "false")),
        ("overlay", "true", (0, "true")),
        ("routing", "bogus", (1, "")),
    ],
)
def test_ovs_start_sets_userspace_tso_from_the_mode(
    tmp_path_factory: pytest.TempPathFactory, mode: str, setting: str, want: tuple[int, str]
) -> None:
    missing = binaries_missing()
    if missing:
        pytest.skip(f"Open vSwitch not installed (missing: {', '.join(missing)})")
    work = tmp_path_factory.mktemp("tso")  # short: unix socket paths <= 107 bytes
    config = work / CONFIG_KEY
    config.write_text(yaml.safe_dump({"mode": mode, "datapathType": "netdev"}))
    env = {
        **_ovs_env(work),
        "SLUICE_CONFIG": str(config),
        "SLUICE_USERSPACE_TSO": setting,
        "SLUICE_PYTHON": sys.executable,
        "PYTHONPATH": str(REPO),
    }
    assert _ovs_start_tso(work, env) == want
