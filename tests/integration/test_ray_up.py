"""`ray up` / `ray down` of cluster.yaml on this machine: the cluster launcher itself runs the
file's file_mounts (the token), rsync_filter and head start commands over SSH, and the head
it starts must demand the token.

cluster.yaml is turned into Ray's on-premise ("local") provider config: the same
commands, file mounts and filter, minus the AWS node types (placement on them is
test_autoscaling.py's) and the container (no Docker daemon here). SSH reaches this machine
through a private `sshd -i` started per connection as the launcher's ProxyCommand (its own
host key, authorized key and home folder; no daemon, no port, nothing of the machine's
ssh setup touched); Debian's openssh-server and rsync come from scripts/system-deps.sh.

The start commands begin with `ray stop`, as on a real node: this test stops every Ray
instance of this user on the machine, so it must not run beside other Ray tests (pytest
runs tests one at a time)."""

from __future__ import annotations

import copy
import getpass
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.system import require

from .helpers import REPO, cli_env

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
SSHD = "/usr/sbin/sshd"
CLUSTER = yaml.safe_load((REPO / "cluster.yaml").read_text())
DASHBOARD = "http://127.0.0.1:8265"


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
    """(launcher config path, the node's home): a node reached over SSH whose home is a
    folder of this test, with the project's virtualenv on its PATH."""
    require("sshd", "ssh-keygen", "rsync")
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege separation
    home = tmp_path / "node-home"
    home.mkdir()
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
    # the launcher runs commands in login shells, which set PATH afresh: the node's image
    # has Ray on it; here it is the project's virtualenv
    (home / ".profile").write_text(f'export PATH="{BIN}:$PATH"\n')
    cfg = tmp_path / "cluster.yaml"
    cfg.write_text(yaml.safe_dump(launcher_config(tmp_path, sshd_config, tmp_path / "id")))
    return cfg, home


def ray_cli(*args: str, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ray"), *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def test_ray_up_runs_cluster_yaml_start_commands_with_token_auth(ssh_node) -> None:
    cfg, home = ssh_node
    env = cli_env(RAY_AUTH_MODE="token", PATH=f"{BIN}:{os.environ['PATH']}")
    token = Path.home() / ".ray" / "auth_token"
    if not token.exists():  # where `ray up` is run: the documented first step
        subprocess.run([BIN / "ray", "get-auth-token", "--generate"], env=env, check=True,
                       capture_output=True)
    try:
        up = ray_cli("up", str(cfg), "-y", "--no-config-cache", env=env)
        assert up.returncode == 0, (up.stdout + up.stderr)[-5000:]
        # the token reached the node through file_mounts (rsync over SSH), not by sharing
        # a folder: the node's home is this test's folder
        assert (home / ".ray" / "auth_token").read_text() == token.read_text()
        # the launcher's bootstrap config holds the commands it ran
        boot = yaml.safe_load((home / "ray_bootstrap_config.yaml").read_text())
        assert boot["head_start_ray_commands"] == CLUSTER["head_start_ray_commands"]
        # the head the commands started: dashboard on 127.0.0.1 only, and it wants the token
        deadline = time.time() + 120
        while True:
            status = ray_cli("list", "nodes", "--address", DASHBOARD, env=env, timeout=120)
            if status.returncode == 0 or time.time() > deadline:
                break
            time.sleep(3)
        assert status.returncode == 0, status.stderr[-3000:]
        assert "ALIVE" in status.stdout
        with pytest.raises(urllib.error.HTTPError) as err:  # no token, no answer
            urllib.request.urlopen(DASHBOARD + "/api/jobs/", timeout=10)
        assert err.value.code in (401, 403)
    finally:
        down = ray_cli("down", str(cfg), "-y", env=env)
    assert down.returncode == 0, (down.stdout + down.stderr)[-3000:]
    with pytest.raises(urllib.error.URLError):  # `ray down` stopped it
        urllib.request.urlopen(DASHBOARD + "/api/version", timeout=10)
