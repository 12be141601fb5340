"""A real Slurm cluster whose nodes are emulated hosts: Slurm's own daemons, no stand-ins.

`cluster up --slurm` builds K emulated hosts (`netns.Cluster`: namespaces on a bridge, each
link shaped), gives the bridge an address (the controller's), and starts munged, slurmctld
(in this machine's namespace, on the bridge's address) and one slurmd per host, each in its
namespace with its own hostname (a UTS namespace: this Slurm build runs one slurmd per
host). Everything it writes lives in one state folder per cluster slot
(`/run/dist_sqz/slurm<k>`): slurm.conf, munge's key and socket, logs, spool, pids. Clients
find the cluster through `SLURM_CONF` (printed by `up`, kept in `STATE_DIR/slurm.current`).

Ports and names follow the slot (controller port 6817 + 2k, nodes `d<k>n<i>`, cluster name
`dsqz<k>`), so two Slurm test clusters on one machine do not collide. The slot is owned by
the slurmctld process (its pid and start time), so the cluster outlives the command that
made it; `cluster down` (or a later `up` finding the owner dead) kills every daemon and
removes every namespace and link. Facts these settings rest on (Debian's slurm-wlm 22.05 on
these machines): `SlurmctldHost` must be this machine's hostname with the bridge address in
brackets; cgroup v1 is mounted under a tmpfs (`CgroupPlugin=cgroup/v1`, `proctrack/pgid`,
`task/none`); a node's `CPUs=` may not exceed this machine's cores.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from dist_sqz.cluster.netns import (
    PREFIX,
    STATE_DIR,
    Cluster,
    _slots_locked,
    hand_slot,
    host_addr,
    ns_name,
    proc_stat,
    remove_prefix,
    sh,
)
from dist_sqz.errors import UsageError

DAEMONS = ("slurmctld", "slurmd", "munged", "sbatch", "scontrol")
CURRENT = STATE_DIR / "slurm.current"  # the SLURM_CONF of the cluster `up` made last
START_TIMEOUT_S = 60


def state_dir(slot: int) -> Path:
    return STATE_DIR / f"slurm{slot}"


def node_name(slot: int, i: int) -> str:
    return f"d{slot}n{i}"


def missing_daemons() -> list[str]:
    return [d for d in DAEMONS if shutil.which(d) is None]


def _conf(slot: int, hosts: int, addr: str, folder: Path, cpus: int) -> str:
    nodes = "\n".join(
        f"NodeName={node_name(slot, i)} NodeAddr={host_addr(slot, i)} CPUs={cpus} State=UNKNOWN"
        for i in range(hosts)
    )
    names = f"d{slot}n[0-{hosts - 1}]" if hosts > 1 else node_name(slot, 0)
    return f"""# written by `dist-sqz cluster up --slurm` (dist_sqz/cluster/slurm.py)
ClusterName={PREFIX}{slot}
SlurmctldHost={socket.gethostname()}({addr})
SlurmctldPort={6817 + 2 * slot}
SlurmdPort={6818 + 2 * slot}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={folder}/munge.socket
CredType=cred/munge
StateSaveLocation={folder}/ctld
SlurmdSpoolDir={folder}/spool/%n
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.%n.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.%n.log
ProctrackType=proctrack/pgid
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SelectType=select/linear
ReturnToService=2
SlurmdTimeout=30
KillWait=15
MinJobAge=600
InactiveLimit=0
{nodes}
PartitionName=test Nodes={names} Default=YES MaxTime=INFINITE State=UP
"""


def _spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A daemon in the foreground, in its own session (it outlives this command)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )


def _wait(what: str, ready, folder: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.5)
    raise UsageError(f"the Slurm test cluster did not come up: {what} (logs in {folder})")


def _controller(slot: int) -> None:
    """slurmctld of the slot, which then owns it (the cluster outlives this command)."""
    folder = state_dir(slot)
    ctld = _spawn(
        ["slurmctld", "-D", "-i", "-f", str(folder / "slurm.conf")],
        folder / "slurmctld.out",
        env_for(folder),
    )
    hand_slot(slot, ctld.pid)


def stop_controller(slot: int, timeout_s: float = 30) -> None:
    """Stop slurmctld as a restart or an upgrade does (SIGTERM: it saves its state); the
    nodes and their jobs keep running. Until start_controller, the calling process owns the
    slot, so no cluster allocated meanwhile takes the nodes for a dead owner's leftovers."""
    pid = int((state_dir(slot) / "slurmctld.pid").read_text().split()[0])
    hand_slot(slot, os.getpid())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while proc_stat(str(pid), 0) not in (None, "Z") and time.monotonic() < deadline:
        time.sleep(0.2)


def start_controller(slot: int) -> None:
    """slurmctld again, from its saved state (jobs and nodes), once it answers."""
    folder = state_dir(slot)
    _controller(slot)
    _wait("the controller answering", lambda: bool(sinfo(folder)), folder)


def start_slurmd(slot: int, i: int) -> None:
    """Node i's slurmd, in its namespace with its own hostname (also to bring back a node
    whose slurmd died: `ReturnToService=2` takes it back once it registers)."""
    folder, name = state_dir(slot), node_name(slot, i)
    script = f"hostname {name} && exec slurmd -D -f {folder / 'slurm.conf'}"
    _spawn(
        ["ip", "netns", "exec", ns_name(slot, i), "unshare", "--uts", "sh", "-c", script],
        folder / f"slurmd.{name}.out",
    )


def env_for(folder: Path) -> dict[str, str]:
    return {**os.environ, "SLURM_CONF": str(folder / "slurm.conf")}


def sinfo(folder: Path) -> str:
    proc = subprocess.run(["sinfo"], capture_output=True, text=True, env=env_for(folder))
    return proc.stdout.strip()


def _idle_nodes(folder: Path) -> int:
    proc = subprocess.run(
        ["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, env=env_for(folder)
    )
    return sum(1 for s in proc.stdout.split() if s.startswith("idle"))


def up(hosts: int, link: str) -> Path:
    """Start a Slurm test cluster of `hosts` emulated hosts at `link`; its state folder."""
    lack = missing_daemons()
    if lack:
        raise UsageError(
            f"Slurm is not installed here ({', '.join(lack)} not found): run "
            "launch/install_slurm.sh"
        )
    hosts_ = Cluster(hosts, link)
    hosts_.up()  # claims a slot owned by this process; handed to slurmctld below
    slot = hosts_.slot
    folder = state_dir(slot)
    try:
        shutil.rmtree(folder, ignore_errors=True)
        (folder / "spool").mkdir(parents=True)
        (folder / "ctld").mkdir()
        addr = host_addr(slot, 253)  # the bridge's: slurmctld listens there
        sh("ip", "addr", "add", f"{addr}/24", "dev", f"{hosts_.prefix}-br")
        cpus = os.cpu_count() or 1
        (folder / "slurm.conf").write_text(_conf(slot, hosts, addr, folder, cpus))
        (folder / "cgroup.conf").write_text("CgroupPlugin=cgroup/v1\n")
        key = folder / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        sh(
            "munged",
            "--force",
            f"--key-file={key}",
            f"--socket={folder}/munge.socket",
            f"--pid-file={folder}/munged.pid",
            f"--log-file={folder}/munged.log",
            f"--seed-file={folder}/munged.seed",
        )
        _controller(slot)
        for i in range(hosts):
            start_slurmd(slot, i)
        _wait(f"{hosts} nodes idle", lambda: _idle_nodes(folder) == hosts, folder)
    except BaseException:
        down_slot(slot)
        raise
    CURRENT.write_text(str(folder / "slurm.conf") + "\n")
    return folder


def _is_running(pidfile: Path, command: str) -> bool:
    try:
        pid = pidfile.read_text().split()[0]
        return Path(f"/proc/{pid}/comm").read_text().strip() == command
    except (OSError, IndexError):
        return False


def _kill_pidfile(path: Path) -> None:
    """Kill the process a pid file names and every process of its session (slurmctld's
    slurmscriptd, a daemon's helpers)."""
    try:
        pid = path.read_text().split()[0]
    except (OSError, IndexError):
        return
    session = proc_stat(pid, 3)
    victims = {pid}
    if session is not None and session == pid:  # it leads its session: take the session
        victims |= {p.name for p in Path("/proc").glob("[0-9]*") if proc_stat(p.name, 3) == session}
    for victim in victims:
        try:
            os.kill(int(victim), signal.SIGKILL)
        except (OSError, ValueError):
            pass


def down_slot(slot: int) -> None:
    """Stop every daemon of the slot's Slurm cluster and remove its hosts. Idempotent."""
    folder = state_dir(slot)
    for pidfile in folder.glob("*.pid"):
        _kill_pidfile(pidfile)
    owner = STATE_DIR / f"slot{slot}.owner"
    if _is_running(owner, "slurmctld"):  # not a process that stopped the controller for a while
        _kill_pidfile(owner)
    # Anything still running with this cluster's config (srun, steps started by slurmd).
    conf = str(folder / "slurm.conf")
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if conf in (proc / "cmdline").read_bytes().decode(errors="replace"):
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ValueError):
            pass
    remove_prefix(f"{PREFIX}{slot}")
    with _slots_locked():
        owner.unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)
    if CURRENT.exists() and CURRENT.read_text().strip() == conf:
        CURRENT.unlink(missing_ok=True)


def slurm_slots() -> list[int]:
    return sorted(int(p.name[len("slurm") :]) for p in STATE_DIR.glob("slurm[0-9]*") if p.is_dir())


def down() -> list[int]:
    """Stop every Slurm test cluster on this machine (live or left by a crash)."""
    slots = slurm_slots()
    for slot in slots:
        down_slot(slot)
    return slots
