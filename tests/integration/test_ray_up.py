"""`ray up` / `ray down` of cluster.yaml on this machine: the cluster launcher itself runs the
file's file_mounts (the token), rsync_filter and head start commands over SSH, and the head
it starts must demand the token.

cluster.yaml is turned into Ray's on-premise ("local") provider config: the same
commands, file mounts and filter, minus the AWS node types (placement on them is
test_autoscaling.py's) and the container (no Docker daemon here). SSH reaches this machine
through a private `sshd -i` started per connection as the launcher's ProxyCommand (its own
host key, authorized key and home folder; no daemon, no port, nothing of the machine's
ssh setup touched); Debian's openssh-server and rsync come from scripts/system-deps.sh.

The start commands begin with `ray stop` and use fixed ports, as on a real node, whose machine
is its own. This node shares the machine with the rest of the suite (the other test worker)
and perhaps a user's own Ray, so its `ray` is Ray's CLI confined to it (node_ray.py): `ray
start` gets the node's temp dir and free ports, `ray stop` stops the node's processes only.
The launcher runs with a home of its own (its token, its state): nothing of the user's
~/.ray is read or written. A Ray instance started beside the test must survive it."""

from __future__ import annotations

import copy
import getpass
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
import yaml

from tests.system import require

from .helpers import REPO, cli_env, free_port

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
SSHD = "/usr/sbin/sshd"
CLUSTER = yaml.safe_load((REPO / "cluster.yaml").read_text())
SECRET_NAME, SECRET = "SYNTH_RAY_TEST_HF_TOKEN", "hf-test-value-8812"


def launcher_config(tmp: Path, sshd_config: Path, key: Path) -> dict:
    cfg = copy.deepcopy(CLUSTER)
    for aws_or_container in ("docker", "available_node_types", "head_node_type", "provider"):
        cfg.pop(aws_or_container)
    cfg.update(cluster_name=f"synth-ray-test-{os.getpid()}", max_workers=0,
               provider={"type": "local", "head_ip": "127.0.0.1", "worker_ips": []},
               auth={"ssh_user": getpass.getuser(), "ssh_private_key": str(key),
                     "ssh_proxy_command": f"{SSHD} -i -f {sshd_config}"})
    return cfg


@pytest.fixture
def ssh_node(tmp_path):
    """(launcher config path, the node's home, the launcher's environment, the node's
    dashboard URL, the node's Ray temp dir): a node reached over SSH whose home is a folder
    of this test, with the project's virtualenv on its PATH behind node_ray.py's `ray`."""
    require("sshd", "ssh-keygen", "rsync")
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege separation
    home, launcher = tmp_path / "node-home", tmp_path / "launcher-home"
    (home / "bin").mkdir(parents=True)
    launcher.mkdir()
    for name in ("hostkey", "id"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                        str(tmp_path / name)], check=True)
    shutil.copy(tmp_path / "id.pub", tmp_path / "authorized_keys")
    sshd_config = tmp_path / "sshd_config"
    sshd_config.write_text(
        f"HostKey {tmp_path / 'hostkey'}\nAuthorizedKeysFile {tmp_path / 'authorized_keys'}\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        f"SetEnv HOME={home}\n")
    # short temp dirs (Unix socket paths are limited), removed at the end
    node_temp = tempfile.mkdtemp(prefix="rn", dir="/tmp")
    launcher_temp = tempfile.mkdtemp(prefix="rl", dir="/tmp")
    ports = {opt: free_port() for opt in (
        "--port", "--object-manager-port", "--dashboard-port", "--ray-client-server-port",
        "--dashboard-agent-listen-port")}
    # the launcher runs commands in login shells, which set PATH afresh: the node's image
    # has Ray on it; here it is the project's virtualenv, behind the node's `ray`
    (home / "bin" / "ray").write_text(
        f'#!/bin/sh\nexec "{sys.executable}" "{REPO}/tests/integration/node_ray.py" "$@"\n')
    (home / "bin" / "ray").chmod(0o755)
    (home / ".profile").write_text(
        f'export PATH="{home / "bin"}:{BIN}:$PATH" RAY_TMPDIR="{node_temp}"\n'
        f'export NODE_RAY_REAL="{BIN / "ray"}" NODE_RAY_TEMP="{node_temp}"\n'
        f"export NODE_RAY_PORTS='{json.dumps(ports)}'\n")
    cfg = tmp_path / "cluster.yaml"
    cfg.write_text(yaml.safe_dump(launcher_config(tmp_path, sshd_config, tmp_path / "id")))
    env = cli_env(RAY_AUTH_MODE="token", PATH=f"{BIN}:{os.environ['PATH']}", HOME=str(launcher),
                  RAY_TMPDIR=launcher_temp)
    try:
        yield cfg, home, env, f"http://127.0.0.1:{ports['--dashboard-port']}", node_temp
    finally:
        shutil.rmtree(node_temp, ignore_errors=True)
        shutil.rmtree(launcher_temp, ignore_errors=True)


@pytest.fixture
def bystander():
    """A Ray instance of someone else's on the machine (own temp dir, free ports, in the
    foreground): the test must leave it running. Yields its `ray start --block` process."""
    temp = tempfile.mkdtemp(prefix="rb", dir="/tmp")
    proc = subprocess.Popen(
        [BIN / "ray", "start", "--head", "--block", f"--temp-dir={temp}",
         f"--port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
         f"--ray-client-server-port={free_port()}", "--include-dashboard=false",
         "--num-cpus=0", "--disable-usage-stats"],
        env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        deadline = time.time() + 120  # up when its raylet runs
        while not raylets(temp):
            assert time.time() < deadline and proc.poll() is None, "bystander Ray did not start"
            time.sleep(1)
        yield proc, temp
    finally:
        proc.terminate()  # `ray start --block` stops its own node
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


def raylets(temp: str) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["name", "cmdline"])
            if p.info["name"] == "raylet" and temp in " ".join(p.info["cmdline"] or [])]


def ray_cli(*args: str, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ray"), *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def test_ray_up_runs_cluster_yaml_start_commands_with_token_auth(ssh_node, bystander) -> None:
    cfg, home, env, dashboard, node_temp = ssh_node
    launcher_token = Path(env["HOME"]) / ".ray" / "auth_token"
    # where `ray up` is run: the documented first steps (here in the launcher's own home):
    # the token, and the file of the values every node needs (docs/cluster.md, "Secrets")
    subprocess.run([BIN / "ray", "get-auth-token", "--generate"], env=env, check=True,
                   capture_output=True)
    secrets = Path(env["HOME"]) / ".synth-ray" / "node.env"
    secrets.parent.mkdir()
    secrets.write_text(f"{SECRET_NAME}={SECRET}\n")
    secrets.chmod(0o600)
    try:
        up = ray_cli("up", str(cfg), "-y", "--no-config-cache", env=env)
        assert up.returncode == 0, (up.stdout + up.stderr)[-5000:]
        # the token reached the node through file_mounts (rsync over SSH), not by sharing
        # a folder: the node's home is this test's folder
        assert (home / ".ray" / "auth_token").read_text() == launcher_token.read_text()
        # the launcher's bootstrap config holds the commands it ran
        boot = yaml.safe_load((home / "ray_bootstrap_config.yaml").read_text())
        assert boot["head_start_ray_commands"] == CLUSTER["head_start_ray_commands"]
        # the head the commands started: dashboard on 127.0.0.1 only, and it wants the token
        deadline = time.time() + 120
        while True:
            status = ray_cli("list", "nodes", "--address", dashboard, env=env, timeout=120)
            if status.returncode == 0 or time.time() > deadline:
                break
            time.sleep(3)
        assert status.returncode == 0, status.stderr[-3000:]
        assert "ALIVE" in status.stdout
        with pytest.raises(urllib.error.HTTPError) as err:  # no token, no answer
            urllib.request.urlopen(dashboard + "/api/jobs/", timeout=10)
        assert err.value.code in (401, 403)
        # cluster.yaml's `ray stop` ran before the head started: the bystander lived on
        assert raylets(bystander[1])
        # the node's Ray got the secret in its environment (every worker process inherits
        # the raylet's), and its value is in none of what the launcher printed or wrote
        assert [p.environ().get(SECRET_NAME) for p in raylets(node_temp)] == [SECRET]
        assert SECRET not in up.stdout + up.stderr
        assert SECRET not in (home / "ray_bootstrap_config.yaml").read_text()
    finally:
        down = ray_cli("down", str(cfg), "-y", env=env)
    assert down.returncode == 0, (down.stdout + down.stderr)[-3000:]
    with pytest.raises(urllib.error.URLError):  # `ray down` stopped it
        urllib.request.urlopen(dashboard + "/api/version", timeout=10)
    # ... and nothing else: the Ray instance beside the test is still up
    assert bystander[0].poll() is None and raylets(bystander[1])
