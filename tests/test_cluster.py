"""cluster/: the recipes, checked as far as one machine allows.

Static: the `ray up` config against the schema that ships with Ray (and Ray's own validation), the KubeRay
manifests (what the operator needs, no secret inline, the RayJob's entrypoint parsed by the study's own argument
parser), the README's commands, and the scripts' refusals of unsafe settings. For real: `bash cluster/rehearse.sh`
builds a 3-node Ray cluster in network namespaces, runs the study on it, kills a node mid-sweep and checks that
clients without the token or the MLflow credentials are refused.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import signal
import stat
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from packaging.requirements import Requirement

from sweeps.cli import study_arg_parser
from sweeps.depth_vs_error import STUDY

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|KEY", re.I)


def load(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kuberay() -> dict[str, dict]:
    """Every KubeRay manifest by kind (one object of each kind; the submitter's NetworkPolicy as
    ClientNetworkPolicy)."""
    docs = [doc for path in sorted((CLUSTER / "kuberay").glob("*.yaml")) for doc in load(path)]
    by_kind = {"ClientNetworkPolicy" if doc["kind"] == "NetworkPolicy" and doc["metadata"]["name"].endswith("-clients")
               else doc["kind"]: doc for doc in docs}
    assert len(by_kind) == len(docs), [doc["kind"] for doc in docs]
    return by_kind


def pod_templates(cluster: dict) -> list[dict]:
    spec = cluster["spec"]
    return [spec["headGroupSpec"]["template"], *(group["template"] for group in spec["workerGroupSpecs"])]


def ray_version_of_image(image: str) -> str:
    match = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py311-gpu", image)
    assert match, f"{image}: not a pinned rayproject/ray Python 3.11 GPU image"
    return match[1]


def dockerfile_ray_version() -> str:
    base = re.search(r"^FROM (\S+)$", (CLUSTER / "Dockerfile").read_text(), re.M)[1]
    return ray_version_of_image(base)


def study_flags(command: str) -> list[str]:
    """The flags after sweeps/depth_vs_error.py in a command line."""
    words = shlex.split(command)
    script = next(i for i, word in enumerate(words) if word.endswith("sweeps/depth_vs_error.py"))
    return words[script + 1:]


def parse_study(flags: list[str]):
    return study_arg_parser(STUDY).parse_args(flags)


# --- ray up -------------------------------------------------------------------------------------------------

def test_ray_up_config_is_valid_against_the_schema_that_ships_with_ray():
    config = load(CLUSTER / "ray-up.yaml")[0]
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    # and what `ray up` itself does with it: fill in the provider's defaults, then validate
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(config))


def test_ray_up_config_has_a_gpu_worker_type_token_auth_and_the_dashboard_on_loopback():
    config = load(CLUSTER / "ray-up.yaml")[0]
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    gpu_types = [name for name, node in types.items() if node["resources"].get("GPU", 0) >= 1]
    assert gpu_types and all(types[name]["max_workers"] >= 1 for name in gpu_types)
    assert ray_version_of_image(config["docker"]["image"]) == dockerfile_ray_version()
    # one token, copied from the operator's machine to every node; never a file of this repository
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    starts = [c for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 2 and all("export RAY_AUTH_MODE=token" in c for c in starts)
    assert all(". ~/.config/resnet-studies/node.env" in c for c in starts)  # the tracking settings, not in a job
    head = next(c for c in config["head_start_ray_commands"] if "ray start" in c)
    assert "--dashboard-host=127.0.0.1" in head
    text = (CLUSTER / "ray-up.yaml").read_text()
    assert not re.search(r"MLFLOW_TRACKING_(USERNAME|PASSWORD)\s*[:=]", text)


# --- KubeRay ------------------------------------------------------------------------------------------------

def test_kuberay_raycluster_has_what_the_operator_needs():
    manifests = kuberay()
    cluster = manifests["RayCluster"]
    assert cluster["apiVersion"] == "ray.io/v1"
    spec = cluster["spec"]
    assert spec["rayVersion"] == dockerfile_ray_version()
    assert spec["authOptions"] == {"mode": "token", "secretName": "resnet-ray-token"}
    assert isinstance(spec["headGroupSpec"]["rayStartParams"], dict)
    for group in spec["workerGroupSpecs"]:
        assert group["groupName"] and isinstance(group["rayStartParams"], dict)
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert all(isinstance(value, str) for value in group["rayStartParams"].values())
    assert all(isinstance(value, str) for value in spec["headGroupSpec"]["rayStartParams"].values())
    gpu_groups = [g for g in spec["workerGroupSpecs"]
                  if all(int(c["resources"]["limits"].get("nvidia.com/gpu", 0)) >= 1 for c in g["template"]["spec"]["containers"])]
    assert gpu_groups, "no worker group whose containers have a GPU limit"

    claim = manifests["PersistentVolumeClaim"]
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    for template in pod_templates(cluster):
        containers, volumes = template["spec"]["containers"], template["spec"]["volumes"]
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v}
        assert claims == {"shared": claim["metadata"]["name"]}
        for container in containers:
            assert re.fullmatch(r"[\w.\-/]+:\d+\.\d+\.\d+", container["image"]), container["image"]  # pinned
            assert {"name": "shared", "mountPath": "/mnt/shared"} in container["volumeMounts"]
            env = {e["name"]: e for e in container["env"]}
            for name, key in (("MLFLOW_TRACKING_URI", "uri"), ("MLFLOW_TRACKING_USERNAME", "username"),
                              ("MLFLOW_TRACKING_PASSWORD", "password")):
                assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "resnet-mlflow", "key": key}


def test_kuberay_manifests_hold_no_secret():
    for path in sorted((CLUSTER / "kuberay").glob("*.yaml")):
        for doc in load(path):
            assert doc["kind"] != "Secret", f"{path.name}: a Secret belongs in the cluster, not in the repository"

            def walk(node):
                if isinstance(node, dict):
                    assert not {"stringData", "data"} & set(node), f"{path.name}: inline data"
                    if "name" in node and SECRET_NAME.search(str(node["name"])):
                        assert "value" not in node, f"{path.name}: {node['name']} has an inline value"
                    for value in node.values():
                        walk(value)
                elif isinstance(node, list):
                    for value in node:
                        walk(value)

            walk(doc)


def test_kuberay_rayjob_runs_the_paper_preset_with_flags_the_study_accepts():
    manifests = kuberay()
    job, cluster = manifests["RayJob"], manifests["RayCluster"]
    assert job["apiVersion"] == "ray.io/v1"
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    entrypoint = job["spec"]["entrypoint"]
    assert shlex.split(entrypoint)[:2] == ["python", "/home/ray/resnet-studies/sweeps/depth_vs_error.py"]
    args = parse_study(study_flags(entrypoint))  # the study's own parser: exits on an unknown flag
    assert args.preset == "paper"
    for path in (args.storage_path, getattr(args, "data.data_dir"), args.report_path):
        assert path.startswith("/mnt/shared/"), path  # on the shared volume, not in a pod's own disk
    # every trial would download CIFAR-10 at once into the one shared directory: the data is put there first
    assert not any(item.replace(" ", "").startswith("data.download=") for item in args.set), args.set
    submitter = job["spec"]["submitterPodTemplate"]["spec"]["containers"][0]
    env = {e["name"]: e for e in submitter["env"]}
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": cluster["spec"]["authOptions"]["secretName"],
                                                                  "key": "auth_token"}



# --- KubeRay: hardened pods and a NetworkPolicy -------------------------------------------------------------

CLIENT_LABEL = "resnet-studies/ray-client"  # the label of a pod allowed to reach the Jobs API (the submitter)
OPERATOR_LABELS = {"app.kubernetes.io/component": "kuberay-operator"}  # the Helm chart's operator pod
DASHBOARD = 8265


def dockerfile_user() -> tuple[int, int]:
    """The numeric user:group the image of cluster/Dockerfile runs as (its last USER)."""
    users = re.findall(r"^USER\s+(\S+)\s*$", (CLUSTER / "Dockerfile").read_text(), re.M)
    assert users, "cluster/Dockerfile sets no USER"
    match = re.fullmatch(r"(\d+):(\d+)", users[-1])
    assert match, f"cluster/Dockerfile's last USER {users[-1]!r} is not numeric uid:gid (runAsNonRoot cannot check a name)"
    return int(match[1]), int(match[2])


def all_pod_specs(manifests: dict[str, dict]) -> dict[str, dict]:
    """Every pod spec the manifests make: the head, each worker group, the RayJob's submitter."""
    spec = manifests["RayCluster"]["spec"]
    pods = {"head": spec["headGroupSpec"]["template"]["spec"]}
    pods |= {f"worker group {g['groupName']}": g["template"]["spec"] for g in spec["workerGroupSpecs"]}
    pods["submitter"] = manifests["RayJob"]["spec"]["submitterPodTemplate"]["spec"]
    return pods


def pod_problems(manifests: dict[str, dict]) -> list[str]:
    """What is missing from the hardening of each pod and container (empty: all there)."""
    uid, gid = dockerfile_user()
    problems = []
    for pod_name, pod in all_pod_specs(manifests).items():
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{pod_name}: automountServiceAccountToken is not false")
        pod_context = pod.get("securityContext") or {}
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            where = f"{pod_name} container {container['name']}"
            context = container.get("securityContext") or {}
            effective = {**pod_context, **context}  # a container's setting overrides the pod's
            if effective.get("runAsNonRoot") is not True:
                problems.append(f"{where}: runAsNonRoot is not true")
            if effective.get("runAsUser") != uid:
                problems.append(f"{where}: runAsUser {effective.get('runAsUser')}, not the image's {uid}")
            if effective.get("runAsGroup") != gid:
                problems.append(f"{where}: runAsGroup {effective.get('runAsGroup')}, not the image's {gid}")
            if (effective.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
                problems.append(f"{where}: seccompProfile is not RuntimeDefault")
            if context.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
            if context.get("privileged"):
                problems.append(f"{where}: privileged")
            if context.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: readOnlyRootFilesystem is not true")
            empty_dirs = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
            if not any(m["mountPath"] == "/tmp" and m["name"] in empty_dirs for m in container.get("volumeMounts", [])):
                problems.append(f"{where}: no emptyDir at /tmp (Ray writes its sessions there)")
            capabilities = context.get("capabilities") or {}
            if capabilities.get("drop") != ["ALL"]:
                problems.append(f"{where}: capabilities do not drop ALL")
            if capabilities.get("add"):
                problems.append(f"{where}: capabilities added: {capabilities['add']}")
    return problems


def network_problems(manifests: dict[str, dict]) -> list[str]:
    """What the NetworkPolicy lets through that it should not, or blocks that the cluster needs."""
    cluster_name = manifests["RayCluster"]["metadata"]["name"]
    ray_pods = {"podSelector": {"matchLabels": {"ray.io/cluster": cluster_name}}}
    policy = manifests.get("NetworkPolicy")
    if policy is None:
        return ["no NetworkPolicy"]
    spec, problems = policy["spec"], []
    if spec.get("podSelector") != ray_pods["podSelector"]:
        problems.append(f"the policy selects {spec.get('podSelector')}, not the pods of {cluster_name}")
    if sorted(spec.get("policyTypes", [])) != ["Egress", "Ingress"]:
        problems.append(f"policyTypes {spec.get('policyTypes')}: both Ingress and Egress must be restricted")
    submitter = manifests["RayJob"]["spec"]["submitterPodTemplate"].get("metadata", {}).get("labels", {})
    if submitter.get(CLIENT_LABEL) != "true":
        problems.append(f"the RayJob's submitter pod lacks the label {CLIENT_LABEL}=true")
    clients = {"podSelector": {"matchLabels": {CLIENT_LABEL: "true"}}}
    operator = {"podSelector": {"matchLabels": OPERATOR_LABELS}}
    admitted = []
    for rule in spec.get("ingress", []):
        peers, ports = rule.get("from"), rule.get("ports")
        if not peers:
            problems.append(f"an ingress rule admits every source: {rule}")
            continue
        for peer in peers:
            if peer == ray_pods:
                admitted.append("ray")
            elif peer in (clients, operator):
                # the submitter, your client pods and the operator: the Jobs API only
                if [(p.get("protocol", "TCP"), p["port"]) for p in ports or []] != [("TCP", DASHBOARD)]:
                    problems.append(f"{peer} is admitted to ports {ports}, not the Jobs API ({DASHBOARD}) only")
                admitted.append("client" if peer == clients else "operator")
            else:
                problems.append(f"an ingress rule admits {peer}")
    for needed in ("ray", "client", "operator"):
        if needed not in admitted:
            problems.append(f"no ingress rule admits the {needed} pods")
    egress_ports = set()
    for rule in spec.get("egress", []):
        peers = rule.get("to")
        if not peers:
            problems.append(f"an egress rule allows every destination: {rule}")
            continue
        for peer in peers:
            if "0.0.0.0/0" in str(peer) or peer in ({"namespaceSelector": {}}, {"podSelector": {}}):
                problems.append(f"an egress rule allows {peer}")
        if ray_pods in peers:
            egress_ports.add("ray")
        egress_ports |= {(p.get("protocol", "TCP"), p["port"]) for p in rule.get("ports") or []}
    for needed in ("ray", ("UDP", 53), ("TCP", 53), ("TCP", 5000)):
        if needed not in egress_ports:
            problems.append(f"no egress rule allows {needed} (the Ray pods, DNS, the tracking server)")
    return problems


def client_network_problems(manifests: dict[str, dict]) -> list[str]:
    """What the submitter's NetworkPolicy lets the token-holding pod reach beyond the head's Jobs API and DNS."""
    policy = manifests.get("ClientNetworkPolicy")
    if policy is None:
        return ["no NetworkPolicy for the pods labelled " + CLIENT_LABEL]
    spec, problems = policy["spec"], []
    if spec.get("podSelector") != {"matchLabels": {CLIENT_LABEL: "true"}}:
        problems.append(f"the client policy selects {spec.get('podSelector')}")
    if sorted(spec.get("policyTypes", [])) != ["Egress", "Ingress"] or spec.get("ingress") != []:
        problems.append("the client policy must restrict Ingress (to nothing) and Egress")
    cluster_name = manifests["RayCluster"]["metadata"]["name"]
    head = {"podSelector": {"matchLabels": {"ray.io/cluster": cluster_name, "ray.io/node-type": "head"}}}
    dns = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
           "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}
    allowed = {str(head): {("TCP", DASHBOARD)}, str(dns): {("UDP", 53), ("TCP", 53)}}
    reached = set()
    for rule in spec.get("egress", []):
        ports = {(p.get("protocol", "TCP"), p["port"]) for p in rule.get("ports") or []}
        for peer in rule.get("to") or [None]:
            if str(peer) not in allowed or not ports or not ports <= allowed[str(peer)]:
                problems.append(f"the client pods may reach {peer} on {sorted(ports) or 'every port'}")
            reached.add(str(peer))
    if str(head) not in reached:
        problems.append("the client pods cannot reach the head's Jobs API")
    return problems


def test_kuberay_pods_are_hardened_and_fenced_off():
    manifests = kuberay()
    assert pod_problems(manifests) == []
    assert network_problems(manifests) == []
    assert client_network_problems(manifests) == []  # the submitter holds the token: no way out but to the head
    uid, _ = dockerfile_user()
    assert uid != 0


def _drop(path: str):
    """A change to the manifests: delete the key at a dotted path (numbers index lists)."""
    def change(manifests):
        *parents, last = path.split(".")
        node = manifests
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        del node[int(last) if last.isdigit() else last]
    return change


HEAD_POD = "RayCluster.spec.headGroupSpec.template.spec"
WORKER_POD = "RayCluster.spec.workerGroupSpecs.0.template.spec"
SUBMITTER_POD = "RayJob.spec.submitterPodTemplate.spec"


@pytest.mark.parametrize("path", [
    f"{HEAD_POD}.automountServiceAccountToken", f"{WORKER_POD}.automountServiceAccountToken",
    f"{SUBMITTER_POD}.automountServiceAccountToken",
    *(f"{pod}.securityContext.{key}" for pod in (HEAD_POD, WORKER_POD, SUBMITTER_POD)
      for key in ("runAsNonRoot", "runAsUser", "runAsGroup", "seccompProfile")),
    *(f"{pod}.containers.0.securityContext.{key}" for pod in (HEAD_POD, WORKER_POD, SUBMITTER_POD)
      for key in ("allowPrivilegeEscalation", "capabilities", "readOnlyRootFilesystem")),
    f"{SUBMITTER_POD}.volumes", f"{SUBMITTER_POD}.containers.0.volumeMounts",
    "NetworkPolicy.spec.policyTypes", "NetworkPolicy.spec.ingress.0", "NetworkPolicy.spec.ingress.1",
    "NetworkPolicy.spec.egress.0", "NetworkPolicy.spec.egress.1", "NetworkPolicy.spec.egress.2",
    "RayJob.spec.submitterPodTemplate.metadata.labels", "NetworkPolicy",
    "ClientNetworkPolicy", "ClientNetworkPolicy.spec.policyTypes", "ClientNetworkPolicy.spec.ingress",
    "ClientNetworkPolicy.spec.egress.0.ports", "ClientNetworkPolicy.spec.egress.1.to",
])
def test_the_hardening_checks_notice_a_missing_setting(path):
    manifests = copy.deepcopy(kuberay())
    if path in ("NetworkPolicy", "ClientNetworkPolicy"):
        del manifests[path]
    else:
        _drop(path)(manifests)
    problems = pod_problems(manifests) + network_problems(manifests) + client_network_problems(manifests)
    assert problems, f"nothing noticed without {path}"


def test_dockerfile_runs_as_the_user_of_the_ray_image_without_sudo():
    text = (CLUSTER / "Dockerfile").read_text()
    assert dockerfile_user() == (1000, 100)  # the rayproject/ray images' user `ray` and group `users`
    assert "COPY --chown=1000:100" in text
    assert "NOPASSWD" in text and "/etc/sudoers" in text  # its passwordless sudo is removed
    # pyproject.toml's ranges at the versions the suite passed with (tests/test_dependencies.py checks the file)
    assert "pip install --no-cache-dir -c cluster/constraints.txt -e ." in text


# --- a stopped job gets time to close its sweep -------------------------------------------------------------

JOB_STOP_WAIT = "120"


def test_ray_job_stop_waits_for_the_driver_on_every_recipe(no_ray):
    head = kuberay()["RayCluster"]["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in head["env"]}
    assert env.get("RAY_JOB_STOP_WAIT_TIME_S") == JOB_STOP_WAIT
    assert "RAY_JOB_STOP_SIGNAL" not in env  # SIGTERM, Ray's default
    config = load(CLUSTER / "ray-up.yaml")[0]
    start = next(c for c in config["head_start_ray_commands"] if "ray start" in c)
    assert f"export RAY_JOB_STOP_WAIT_TIME_S={JOB_STOP_WAIT} " in start
    assert "RAY_JOB_STOP_SIGNAL" not in (CLUSTER / "ray-up.yaml").read_text()
    # on-prem: the environment `ray start --head` runs in
    fake_ray = Path(no_ray["PATH"].split(os.pathsep)[0]) / "ray"
    fake_ray.write_text("#!/bin/sh\necho \"RAY_JOB_STOP_WAIT_TIME_S=${RAY_JOB_STOP_WAIT_TIME_S:-unset}\"\n"
                        "echo \"RAY_JOB_STOP_SIGNAL=${RAY_JOB_STOP_SIGNAL:-unset}\"\necho \"ARGS $*\"\n")
    token = Path(no_ray["HOME"]) / ".ray" / "auth_token"
    token.write_text("0" * 64)
    token.chmod(0o600)
    result = run_script("start-head.sh", ["10.0.0.1"], no_ray)
    assert result.returncode == 0, result
    assert f"RAY_JOB_STOP_WAIT_TIME_S={JOB_STOP_WAIT}\n" in result.stdout and "RAY_JOB_STOP_SIGNAL=unset" in result.stdout
    assert "ARGS start --head" in result.stdout


# --- MLflow: the tested release, above the advisories on its basic auth --------------------------------------

def test_mlflow_is_pinned_to_the_tested_minor_above_the_basic_auth_advisories():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["server"]]]
    mlflow = [r for r in pins if r.name == "mlflow"]
    assert len(mlflow) == 2 and {tuple(r.extras) for r in mlflow} == {(), ("auth",)}
    installed = version("mlflow")
    major, minor = installed.split(".")[:2]
    for requirement in mlflow:
        spec = requirement.specifier
        assert spec.contains(installed), (requirement, installed)  # the release tested here
        # GHSA-8c7q-86fq-vvmh (multipart uploads unchecked, fixed in 3.11.0rc1) and GHSA-3p64-6gvh-82v5
        # (LogInputs unchecked, fixed in 3.15.0): no release before 3.15.0
        for older in ("3.0.0", "3.10.1", "3.11.0", "3.14.9"):
            assert not spec.contains(older), (requirement, older)
        assert not spec.contains(f"{major}.{int(minor) + 1}.0"), requirement  # the next minor is untested


# --- the Ray token is created private --------------------------------------------------------------------------

def test_the_token_instructions_create_a_private_file(tmp_path):
    lines = [line for path in (CLUSTER / "README.md", CLUSTER / "lib.sh")
             for line in path.read_text().splitlines()
             if "get-auth-token --generate" in line or re.search(r">\s*~/\.ray/auth_token", line)]
    assert lines
    for line in lines:
        assert "umask 077" in line or "install -m 600" in line, line
    # and the README's command, run: the file is mode 600 in a directory of mode 700
    command = next(line for line in (CLUSTER / "README.md").read_text().splitlines()
                   if "get-auth-token --generate" in line and "umask" in line).split("#")[0].strip()
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env |= {"HOME": str(home), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result
    assert result.stdout == ""  # the token is not printed to the terminal
    token = home / ".ray" / "auth_token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and len(token.read_text().strip()) >= 32
    assert stat.S_IMODE(token.parent.stat().st_mode) == 0o700


# --- the README's commands ----------------------------------------------------------------------------------

def test_every_study_command_in_the_cluster_readme_parses():
    text = (CLUSTER / "README.md").read_text().replace("\\\n", " ")
    commands = [line for line in text.splitlines() if "sweeps/depth_vs_error.py" in line and "--" in line]
    assert len(commands) >= 3  # on-prem, ray up, and the smoke study
    for command in commands:
        command = command.strip().strip("`")
        flags = study_flags(command.split(" -- ", 1)[-1])
        parse_study(flags)


# --- the scripts refuse unsafe settings before anything starts --------------------------------------------------

@pytest.fixture
def no_ray(tmp_path):
    """A PATH whose `ray` and `mlflow` only say they were called: a refusal must come before them."""
    fake = tmp_path / "bin"
    fake.mkdir()
    for name in ("ray", "mlflow"):
        (fake / name).write_text("#!/bin/sh\necho CALLED\nexit 99\n")
        (fake / name).chmod(0o755)
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    return {**env, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}", "HOME": str(home)}


def run_script(name: str, args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(CLUSTER / name), *args], env=env, capture_output=True, text=True, timeout=60)


def test_cluster_scripts_parse():
    for script in CLUSTER.glob("*.sh"):
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0, script


@pytest.mark.parametrize("address", ["0.0.0.0", "8.8.8.8", "::", "not-an-address"])
def test_ray_and_mlflow_refuse_to_listen_on_a_public_or_wildcard_address(no_ray, address):
    token = Path(no_ray["HOME"]) / ".ray" / "auth_token"
    token.write_text("0" * 64)
    token.chmod(0o600)
    for script, args in (("start-head.sh", [address]), ("start-worker.sh", ["10.0.0.1", address]),
                         ("tracking-server.sh", [address])):
        result = run_script(script, args, no_ray)
        assert result.returncode == 2 and "not a loopback or private address" in result.stderr, (script, result)
        assert "CALLED" not in result.stdout


def test_ray_nodes_refuse_to_start_without_a_private_token(no_ray):
    token = Path(no_ray["HOME"]) / ".ray" / "auth_token"
    result = run_script("start-head.sh", ["10.0.0.1"], no_ray)
    assert result.returncode == 2 and "no Ray token" in result.stderr and "CALLED" not in result.stdout
    token.write_text("0" * 64)
    token.chmod(0o644)
    result = run_script("start-worker.sh", ["10.0.0.1", "10.0.0.2"], no_ray)
    assert result.returncode == 2 and "chmod 600" in result.stderr and "CALLED" not in result.stdout


def test_tracking_server_refuses_weak_or_leaky_settings(no_ray):
    good = {"MLFLOW_BACKEND_STORE_URI": "postgresql://mlflow@db/mlflow",
            "MLFLOW_AUTH_DATABASE_URI": "postgresql://mlflow@db/mlflow_auth",
            "MLFLOW_ARTIFACTS_DESTINATION": "/shared/mlartifacts",
            "MLFLOW_AUTH_ADMIN_PASSWORD": "a" * 32, "MLFLOW_FLASK_SERVER_SECRET_KEY": "k" * 64}
    for change, message in (({"MLFLOW_AUTH_ADMIN_PASSWORD": "password1234"}, "shorter than 16"),
                            ({"MLFLOW_FLASK_SERVER_SECRET_KEY": "short"}, "shorter than 32"),
                            ({"MLFLOW_BACKEND_STORE_URI": "postgresql://mlflow:hunter2@db/mlflow"}, "~/.pgpass"),
                            ({"MLFLOW_ALLOWED_HOSTS": "mlflow.lab,*"}, "holds '*'")):
        result = run_script("tracking-server.sh", ["10.0.0.5"], {**no_ray, **good, **change})
        assert result.returncode == 2 and message in result.stderr, (change, result.stderr)
        assert "CALLED" not in result.stdout



def fake_mlflow(env: dict, body: str) -> None:
    """Replace the fake `mlflow` of the no_ray fixture."""
    path = Path(env["PATH"].split(os.pathsep)[0]) / "mlflow"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def tracking_env(tmp_path: Path, **changes) -> dict:
    return {"MLFLOW_BACKEND_STORE_URI": "postgresql://mlflow@db/mlflow",
            "MLFLOW_AUTH_DATABASE_URI": f"sqlite:///{tmp_path}/auth.db",
            "MLFLOW_ARTIFACTS_DESTINATION": "/shared/mlartifacts",
            "MLFLOW_AUTH_CONFIG_PATH": str(tmp_path / "auth.ini"),
            "MLFLOW_AUTH_ADMIN_PASSWORD": "a" * 32, "MLFLOW_FLASK_SERVER_SECRET_KEY": "k" * 64, **changes}


def test_tracking_server_admits_the_readmes_ssh_tunnel_and_nothing_else(no_ray, tmp_path):
    fake_mlflow(no_ray, 'for arg in "$@"; do echo "ARG $arg"; done\n')
    result = run_script("tracking-server.sh", ["10.0.0.5", "5001"], {**no_ray, **tracking_env(tmp_path)})
    assert result.returncode == 0, result
    args = [line[4:] for line in result.stdout.splitlines() if line.startswith("ARG ")]
    hosts = args[args.index("--allowed-hosts") + 1].split(",")
    # the server's own address, and the local end of `ssh -N -L 5001:10.0.0.5:5001 ...` (cluster/README.md)
    assert sorted(hosts) == sorted(["10.0.0.5:5001", "10.0.0.5", "127.0.0.1:5001", "localhost:5001"]), hosts
    assert not any("*" in host for host in hosts)


@pytest.mark.slow
def test_tracking_server_needs_the_admin_password_only_on_its_first_start(no_ray, tmp_path):
    """MLflow's own start-up check (the one `mlflow server` runs before its workers), on a real auth database
    and the auth config the script writes: an empty user store needs the password, a later start does not."""
    fake_mlflow(no_ray, f'exec {sys.executable} -c "from mlflow.server import _bootstrap_basic_auth; '
                        f'_bootstrap_basic_auth(); print(\'BOOTSTRAPPED\')"\n')
    env = {**no_ray, **tracking_env(tmp_path)}
    without_password = {k: v for k, v in env.items() if k != "MLFLOW_AUTH_ADMIN_PASSWORD"}

    first = run_script("tracking-server.sh", ["10.0.0.5"], without_password)  # a new, empty user store
    assert first.returncode != 0 and "BOOTSTRAPPED" not in first.stdout, first
    assert "needs a password to create the admin user" in first.stderr, first  # MLflow's own refusal
    first = run_script("tracking-server.sh", ["10.0.0.5"], env)
    assert first.returncode == 0 and "BOOTSTRAPPED" in first.stdout, first
    for later in (without_password, {**without_password, "MLFLOW_AUTH_ADMIN_PASSWORD": ""}):
        result = run_script("tracking-server.sh", ["10.0.0.5"], later)
        assert result.returncode == 0 and "BOOTSTRAPPED" in result.stdout, result
    assert "a" * 32 not in (tmp_path / "auth.ini").read_text()  # the password is never written to a file
    # a password given must still be a strong one
    weak = run_script("tracking-server.sh", ["10.0.0.5"], {**env, "MLFLOW_AUTH_ADMIN_PASSWORD": "password1234"})
    assert weak.returncode == 2 and "shorter than 16" in weak.stderr and "BOOTSTRAPPED" not in weak.stdout


def test_rehearsal_says_which_prerequisite_is_missing_before_it_builds_anything(tmp_path):
    """A Python without psycopg (the `server` extra): the rehearsal names it and how to install it, and stops
    before it creates a namespace or a directory."""
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "psycopg.py").write_text("raise ImportError('psycopg is blocked by the test')\n")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text(f'#!/bin/sh\nPYTHONPATH={blocked} exec {sys.executable} "$@"\n')
    (venv / "bin" / "python").chmod(0o755)
    for name in ("ray", "mlflow"):
        (venv / "bin" / name).symlink_to(Path(sys.executable).parent / name)
    process = subprocess.Popen(["bash", str(CLUSTER / "rehearse.sh")], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env={**os.environ, "REHEARSAL_VENV": str(venv)},
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:  # it went on to build the cluster: stop it (its trap removes everything)
        os.killpg(process.pid, signal.SIGTERM)
        output, _ = process.communicate(timeout=120)
        pytest.fail("the rehearsal did not stop at its missing prerequisite:\n" + output)
    assert process.returncode == 1, output
    assert "psycopg" in output and 'pip install -e ".[server]"' in output, output
    assert "rehearsal failed at step: checking prerequisites" in output, output
    assert "network:" not in output and "logs kept" not in output, output  # nothing was built
    if os.geteuid() == 0:
        namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert f"rehearsal-{process.pid}-" not in namespaces, namespaces


# --- the rehearsal, for real ----------------------------------------------------------------------------------

SUMMARY = "rehearsal: 3 nodes, 8 trials and a 2-worker trial, node loss survived, unauthenticated clients refused"


@pytest.mark.cluster
@pytest.mark.timeout(1000)
def test_rehearsal_on_three_namespaced_nodes():
    if os.geteuid() != 0:
        pytest.fail("cluster/rehearse.sh needs root (it creates network namespaces and a bridge): run the test "
                    "suite as root, as CI does")
    process = subprocess.Popen(["bash", str(CLUSTER / "rehearse.sh")], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)  # its trap removes the namespaces and everything in them
        output, _ = process.communicate(timeout=120)
        pytest.fail("the rehearsal ran past 900 s:\n" + output)
    print(output)
    assert process.returncode == 0, output
    lines = output.strip().splitlines()
    assert lines[-1] == SUMMARY, output
    assert re.search(r"trials ran on 10\.77\.0\.11: .+\n\s+trials ran on 10\.77\.0\.12: ", output), output
    assert "2-worker trial: its workers on 10.77.0.11 and 10.77.0.12, one MLflow run" in output, output
    assert re.search(r"moved from 10\.77\.0\.11 to 10\.77\.0\.12: attempt \d+ resumed from the checkpoint of "
                     r"iteration [1-9]\d*", output), output
