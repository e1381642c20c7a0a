"""A local Ray cluster whose nodes share no disk, started the way cluster.yaml starts one: a
head with CPU: 0 (token auth on, dashboard and job server on 127.0.0.1 only) and worker
nodes joined with `ray start --address`.

Every worker node runs in a mount namespace of its own (`unshare --mount`), with:
- a private tmpfs for its HOME, its Ray temp dir and its TMPDIR;
- an empty private tmpfs over each of the head's working paths (`private`: the test
  session's temp dirs, where run directories and input files lie, the model cache, ~/.cache,
  the checkout's runs/): the same paths on every node, as on a cluster of one image, but
  each node's own disk, so a worker cannot read what only the head has, and what it writes
  there no other node sees;
- its node image: what a cluster's nodes get from their image, copied in before the head's
  paths are covered (`image`: e.g. compiled kernels).
What the nodes do share is the environment (the checkout's .venv, which a real cluster's
image carries too) and the loopback network (the S3 and MLflow servers the tests start).

`ray start --block` in the foreground for each node: stopping them stops only this cluster,
never another Ray instance on the machine (`ray stop` would kill them all).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

BIN = Path(sys.executable).parent
# set up inside the node's namespace before `ray start`: its private disk, the image copied
# onto it, then the head's paths covered, outermost first (a nested one is made in the
# tmpfs over its parent)
NODE_SCRIPT = """set -eu
mount -t tmpfs -o size=8g,mode=0700 node-disk "$NODE_DISK"
mkdir -p "$NODE_DISK/home/.cache" "$NODE_DISK/tmp" "$NODE_DISK/ray"
eval "$NODE_COPIES"
for d in $NODE_PRIVATE; do mkdir -p "$d"; mount -t tmpfs -o size=8g node-own "$d"; done
exec "$@"
"""


def _reap(proc: subprocess.Popen) -> None:
    """Wait for a node sent SIGTERM (`ray start --block` then stops its node)."""
    try:
        proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # whatever of it is left


def namespaces_work() -> str | None:
    """None if this machine lets a process mount a tmpfs in a mount namespace of its own
    (as root; or in a user namespace), else why not."""
    if shutil.which("unshare") is None:
        return "no `unshare` (util-linux) on this machine"
    probe = subprocess.run([*unshare(), "sh", "-c", "mount -t tmpfs probe /mnt"],
                           capture_output=True, text=True)
    return None if probe.returncode == 0 else f"unshare --mount: {probe.stderr.strip()}"


def unshare() -> list[str]:
    # as root, a mount namespace alone; otherwise in a user namespace mapped to root there
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    return ["unshare", *user, "--mount", "--propagation", "private", "--"]


def outermost_first(paths: list[Path]) -> list[Path]:
    """The paths to cover, parents first: those that exist here, and those under another
    covered one (made inside its tmpfs); a missing one elsewhere is left alone, so that no
    folder is made on this machine's disk."""
    real = sorted({p.resolve() for p in paths}, key=lambda p: len(p.parts))
    out: list[Path] = []
    for p in real:
        if p.exists() or any(q in p.parents for q in out):
            out.append(p)
    return out


def ray_list(kind: str, url: str, env: dict) -> list[dict]:
    out = subprocess.run([BIN / "ray", "list", kind, "--address", url, "--format", "json",
                          "--detail", "--limit", "10000"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


@contextlib.contextmanager
def private_cluster(logs: Path, env: dict[str, str], private: list[Path],
                    image: dict[Path, str], workers: int = 2,
                    head_env: dict[str, str] | None = None) -> Iterator[tuple[str, dict]]:
    """The cluster; yields the job server's URL and the environment for `ray` commands.
    `image`: a folder of this machine -> where it goes on a worker's disk ("home/.cache/X");
    `head_env`: variables only the head has. Each worker has one CPU and a resource
    `worker_<i>`."""
    import ray

    root = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Unix socket paths are limited
    # RAY_TMPDIR: the cluster's own root, where the head records its address (its temp dir
    # is root/ray) and where Ray's tools in every worker look it up (Ray Train's
    # placement-group cleaner would otherwise find a user's `ray start` in /tmp/ray)
    # the cluster's token in a file of its own, given to every node and every `ray` command
    # here (not ~/.ray/auth_token: a user's own cluster may use that one)
    token = Path(root) / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
           "PATH": f"{BIN}:{env['PATH']}", "RAY_TMPDIR": root}
    port, dash = _free_port(), _free_port()
    disks, procs, files = [root], [], []

    def start(name: str, prefix: list[str], node_env: dict, *args: str) -> None:
        files.append(open(logs / f"{name}.log", "w"))  # noqa: SIM115 - closed below
        # free ports where Ray has fixed defaults (the agent's 52365): another Ray instance
        # on the machine (the other test worker's, a user's) may hold them
        procs.append(subprocess.Popen(
            [*prefix, str(BIN / "ray"), "start", "--block", "--disable-usage-stats",
             f"--dashboard-agent-listen-port={_free_port()}", *args],
            env=node_env, stdout=files[-1], stderr=subprocess.STDOUT, start_new_session=True))

    start("head", [], {**env, **(head_env or {})}, "--head", f"--port={port}",
          f"--temp-dir={root}/ray", "--dashboard-host", "127.0.0.1",
          f"--dashboard-port={dash}", f"--ray-client-server-port={_free_port()}",
          "--num-cpus=0")
    url = f"http://127.0.0.1:{dash}"
    try:
        _wait(lambda: subprocess.run([BIN / "ray", "job", "list", "--address", url], env=env,
                                     capture_output=True, timeout=60).returncode == 0,
              procs[0], 240, lambda: (logs / "head.log").read_text()[-3000:])
        head = f"{ray.util.get_node_ip_address()}:{port}"
        own = " ".join(shlex.quote(str(p)) for p in outermost_first(private))
        for i in range(workers):
            disk = tempfile.mkdtemp(prefix=f"nd{i}", dir="/tmp")
            disks.append(disk)
            copies = "; ".join(f"cp -a {shlex.quote(str(src))} {shlex.quote(f'{disk}/{dst}')}"
                               for src, dst in image.items() if src.exists()) or "true"
            node_env = {**env, "NODE_DISK": disk, "NODE_COPIES": copies, "NODE_PRIVATE": own,
                        "HOME": f"{disk}/home", "TMPDIR": f"{disk}/tmp"}
            start(f"worker{i}", [*unshare(), "bash", "-c", NODE_SCRIPT, "node"], node_env,
                  f"--address={head}", f"--temp-dir={disk}/ray", "--num-cpus=1",
                  f"--resources={json.dumps({f'worker_{i}': 1})}")

        def alive() -> bool:
            out = subprocess.run([BIN / "ray", "list", "nodes", "--address", url, "--format",
                                  "json"], env=env, capture_output=True, text=True, timeout=60)
            try:
                nodes = json.loads(out.stdout) if out.returncode == 0 else []
            except json.JSONDecodeError:  # "No resource in the cluster": none registered yet
                nodes = []
            return sum(n["state"] == "ALIVE" for n in nodes) == workers + 1

        _wait(alive, procs[-1], 180, lambda: "".join(
            (logs / f"worker{i}.log").read_text()[-1500:] for i in range(workers)))
        yield url, env
    finally:
        for proc in reversed(procs):  # all stop at once
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            _reap(proc)
        for f in files:
            f.close()
        for d in disks:  # a worker's disk went with its namespace: these are empty
            shutil.rmtree(d, ignore_errors=True)


def _wait(ready, proc: subprocess.Popen, timeout: float, why) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if ready():
            return
        time.sleep(2)
    raise RuntimeError(f"the cluster did not come up: {why()}")


def _free_port() -> int:
    from .helpers import free_port

    return free_port()
