"""The `ray` command on test_ray_up's node: Ray's own CLI, confined to the node.

On a real node the machine is the node's alone, so cluster.yaml's `ray stop` (which stops
every Ray process of the machine) and its fixed ports (6379, 8076, and Ray's defaults 8265,
10001 and 52365) are right there. Here the node is a folder of the machine that runs the
suite, beside other Ray instances (the other test worker's, a user's own), so:
- `ray start` gets the node's own temp dir and, for every fixed port, a free one (the
  node's environment, NODE_RAY_TEMP and NODE_RAY_PORTS, set by its .profile);
- `ray stop` stops the processes of the node's temp dir, and nothing else;
- every other subcommand, and the rest of `ray start`'s command line, reach Ray as written.
"""

from __future__ import annotations

import json
import os
import sys

import psutil

REAL = os.environ["NODE_RAY_REAL"]  # the virtualenv's `ray`
TEMP = os.environ["NODE_RAY_TEMP"]
PORTS: dict[str, int] = json.loads(os.environ["NODE_RAY_PORTS"])  # "--option" -> port


def start_args(args: list[str]) -> list[str]:
    """`ray start`'s arguments with the node's ports and temp dir (`--opt=value` form, as
    cluster.yaml writes them)."""
    out = [f"{a.split('=', 1)[0]}={PORTS[a.split('=', 1)[0]]}"
           if a.split("=", 1)[0] in PORTS else a for a in args]
    if "--head" in out:  # the ports a head would take by default
        given = {a.split("=", 1)[0] for a in out}
        out += [f"{opt}={port}" for opt, port in PORTS.items() if opt not in given]
    return [*out, f"--temp-dir={TEMP}"]


def stop() -> int:
    """SIGTERM to the node's processes (each names the node's temp dir on its command line:
    raylet, GCS, dashboard, agents, workers), SIGKILL to what is left after 15 s."""
    mine = []
    for p in psutil.process_iter(["cmdline"]):
        if p.pid != os.getpid() and TEMP in " ".join(p.info["cmdline"] or []):
            mine.append(p)
    for p in mine:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(mine, timeout=15)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    print(f"Stopped {len(mine)} Ray processes of this node ({TEMP}).")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["stop"]:
        return stop()
    if argv[:1] == ["start"]:
        argv = ["start", *start_args(argv[1:])]
    os.execv(REAL, [REAL, *argv])
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
