"""cluster/: the recipes, checked as far as one machine allows.

Static: the `ray up` config against the schema that ships with Ray (and Ray's own validation), the KubeRay
manifests (what the operator needs, no secret inline, the RayJob's entrypoint parsed by the study's own argument
parser), the README's commands, and the scripts' refusals of unsafe settings. For real: `bash cluster/rehearse.sh`
builds a 3-node Ray cluster in network namespaces, runs the study on it, kills a node mid-sweep and checks that
clients without the token or the MLflow credentials are refused.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

from sweeps.cli import study_arg_parser
from sweeps.depth_vs_error import STUDY

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|KEY", re.I)


def load(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kuberay() -> dict[str, dict]:
    """Every KubeRay manifest by kind (one object of each kind)."""
    docs = [doc for path in sorted((CLUSTER / "kuberay").glob("*.yaml")) for doc in load(path)]
    by_kind = {doc["kind"]: doc for doc in docs}
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
    submitter = job["spec"]["submitterPodTemplate"]["spec"]["containers"][0]
    env = {e["name"]: e for e in submitter["env"]}
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": cluster["spec"]["authOptions"]["secretName"],
                                                                  "key": "auth_token"}


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
    for change, message in (({"MLFLOW_AUTH_ADMIN_PASSWORD": ""}, "set MLFLOW_AUTH_ADMIN_PASSWORD"),
                            ({"MLFLOW_AUTH_ADMIN_PASSWORD": "password1234"}, "shorter than 16"),
                            ({"MLFLOW_FLASK_SERVER_SECRET_KEY": "short"}, "shorter than 32"),
                            ({"MLFLOW_BACKEND_STORE_URI": "postgresql://mlflow:hunter2@db/mlflow"}, "~/.pgpass")):
        result = run_script("tracking-server.sh", ["10.0.0.5"], {**no_ray, **good, **change})
        assert result.returncode == 2 and message in result.stderr, (change, result.stderr)
        assert "CALLED" not in result.stdout


# --- the rehearsal, for real ----------------------------------------------------------------------------------

SUMMARY = "rehearsal: 3 nodes, 8 trials, node loss survived, unauthenticated clients refused"


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
    assert re.search(r"moved from 10\.77\.0\.11 to 10\.77\.0\.12: attempt \d+ resumed from the checkpoint of "
                     r"iteration [1-9]\d*", output), output
