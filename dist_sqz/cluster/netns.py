"""Emulated hosts on one machine: network namespaces, veth links, a bridge, shaped links.

Each cluster owns a private slot k, allocated under a lock: its names start `dsqz<k>-` and
its hosts live on 10.213.k.0/24. Host i is namespace `dsqz<k>-h<i>` with interface `eth0`
at 10.213.k.(i+1), its veth peer `dsqz<k>-v<i>` enslaved to bridge `dsqz<k>-br` in the root
namespace (which gets no address: the addresses exist only inside namespaces this module
created). Each host's egress is shaped with `tc`: tbf at `link` rate, and netem for optional
delay and loss. A slot whose owner process is dead is stale: the next allocation removes
what it left and reuses it. A live owner's cluster is never touched, so several clusters
(and several commands) run side by side.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from dist_sqz.errors import UsageError
from dist_sqz.units import parse_duration, parse_rate

PREFIX = "dsqz"
IFACE = "eth0"
MAX_SLOTS = 250
STATE_DIR = Path(os.environ.get("DIST_SQZ_STATE_DIR", "/run/dist_sqz"))
GSO_BURST = 2**17  # bytes: one 64 KiB GSO segment with room to spare
_LOSS = re.compile(r"^\d+(\.\d+)?%$")


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
    return proc


def namespaces_permitted() -> tuple[bool, str]:
    """Whether this process may create network namespaces (root, iproute2, tc, kernel)."""
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return False, "iproute2 (ip, tc) is not installed"
    if os.geteuid() != 0:
        return False, "network namespaces need root"
    probe = f"{PREFIX}probe{os.getpid()}"
    proc = sh("ip", "netns", "add", probe, check=False)
    if proc.returncode != 0:
        return False, f"cannot create network namespaces ({proc.stderr.strip()[:100]})"
    sh("ip", "netns", "del", probe, check=False)
    return True, ""


def proc_stat(pid: int | str, field: int) -> str | None:
    """Field `field` of /proc/PID/stat after the command name (0: the state; 3: the
    session; 19: the start time), or None when the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[field]
    except (OSError, IndexError):
        return None


def _start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (tells a live owner from a reused pid), or None."""
    return proc_stat(pid, 19)


def ns_name(slot: int, i: int) -> str:
    """Host i's namespace in cluster slot `slot`."""
    return f"{PREFIX}{slot}-h{i}"


def host_addr(slot: int, i: int) -> str:
    """Host i's address in cluster slot `slot` (.254 is the bridge's, when it has one)."""
    return f"10.213.{slot}.{i + 1}"


@contextmanager
def _slots_locked():
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with (STATE_DIR / "slots.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def slot_in_use(slot: int) -> bool:
    """Whether a live process owns the slot (its cluster is not a leftover)."""
    try:
        pid, started = (STATE_DIR / f"slot{slot}.owner").read_text().split()
    except (OSError, ValueError):
        return False
    return _start_time(int(pid)) == started


def remove_prefix(prefix: str) -> None:
    """Delete every namespace (killing what runs in it) and link named `prefix-*`."""
    for line in sh("ip", "netns", "list", check=False).stdout.splitlines():
        ns = line.split()[0] if line.split() else ""
        if not ns.startswith(f"{prefix}-"):
            continue
        for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        sh("ip", "netns", "del", ns, check=False)
    links = sh("ip", "-o", "link", "show", check=False).stdout
    for link in re.findall(rf"\d+: ({re.escape(prefix)}-[a-z0-9]+)[@:]", links):
        sh("ip", "link", "del", link, check=False)


def claim_slot() -> int:
    """A free slot for this process. Slots whose owner died are stale: what they left is
    removed and they are free again. The claim is a file naming this process (pid and start
    time), written under the lock; a live owner's slot is never touched."""
    me = _owner_line(os.getpid())
    with _slots_locked():
        free = None
        for slot in range(MAX_SLOTS):
            owner = STATE_DIR / f"slot{slot}.owner"
            if slot_in_use(slot):
                continue
            if owner.exists():
                remove_prefix(f"{PREFIX}{slot}")
                owner.unlink()
            if free is None:
                free = slot
        if free is None:
            raise UsageError(
                f"all {MAX_SLOTS} emulated-cluster slots are taken by running clusters"
            )
        remove_prefix(f"{PREFIX}{free}")
        (STATE_DIR / f"slot{free}.owner").write_text(me)
        return free


def _owner_line(pid: int) -> str:
    return f"{pid} {_start_time(pid)}\n"


def hand_slot(slot: int, pid: int) -> None:
    """The slot's claim passes to `pid`, which owns the cluster from now on."""
    with _slots_locked():
        (STATE_DIR / f"slot{slot}.owner").write_text(_owner_line(pid))


def release_slot(slot: int) -> None:
    with _slots_locked():
        (STATE_DIR / f"slot{slot}.owner").unlink(missing_ok=True)


@dataclass
class Cluster:
    """K emulated hosts; `with Cluster(...) as c:` brings them up and always tears them down."""

    hosts: int
    link: str = "1gbit"
    delay: str = ""
    loss: str = ""
    max_restarts: int = 0  # torchrun's elastic restarts of failed workers
    slot: int = field(default=-1, init=False)

    def __post_init__(self) -> None:
        if not 1 <= self.hosts <= 250:
            raise UsageError(f"--hosts must be between 1 and 250, got {self.hosts}")
        if self.max_restarts < 0:
            raise UsageError(f"--max-restarts must be >= 0, got {self.max_restarts}")
        self.rate_bps = parse_rate(self.link)
        if self.delay:
            parse_duration(self.delay)
        if self.loss and not _LOSS.match(self.loss):
            raise UsageError(f"loss {self.loss!r} is not a percentage like 0.1%")
        self.up_ = False

    # -- names ----------------------------------------------------------------------------
    @property
    def prefix(self) -> str:
        if self.slot < 0:
            raise RuntimeError("cluster is not up")
        return f"{PREFIX}{self.slot}"

    def ns(self, i: int) -> str:
        return f"{self.prefix}-h{i}"  # ns_name(slot, i), once the cluster is up

    def addr(self, i: int) -> str:
        return host_addr(self.slot, i)

    # -- lifecycle ------------------------------------------------------------------------
    def up(self) -> None:
        ok, why = namespaces_permitted()
        if not ok:
            raise UsageError(f"cannot emulate a cluster here: {why}")
        self.slot = claim_slot()
        bridge = f"{self.prefix}-br"
        try:
            sh("ip", "link", "add", bridge, "type", "bridge")
            sh("ip", "link", "set", bridge, "up")
            for i in range(self.hosts):
                ns, veth = self.ns(i), f"{self.prefix}-v{i}"
                sh("ip", "netns", "add", ns)
                sh("ip", "link", "add", veth, "type", "veth", "peer", "name", IFACE, "netns", ns)
                sh("ip", "link", "set", veth, "master", bridge, "up")
                sh("ip", "-n", ns, "addr", "add", f"{self.addr(i)}/24", "dev", IFACE)
                sh("ip", "-n", ns, "link", "set", IFACE, "up")
                sh("ip", "-n", ns, "link", "set", "lo", "up")
                self._shape(ns)
            self.up_ = True
        except BaseException:
            self.down()
            raise

    def down(self) -> None:
        """Delete this cluster's namespaces and links and free its slot. Idempotent."""
        if self.slot >= 0:
            remove_prefix(self.prefix)
            release_slot(self.slot)
        self.up_ = False

    def _shape(self, ns: str) -> None:
        # burst: ~1 ms at the rate, and never below one 64 KiB GSO segment. With a smaller
        # bucket tbf cuts every TCP segment down to MTU-sized packets in software, and on a
        # few cores that per-packet work, not the rate, then caps 8 hosts at ~0.65 x the
        # link. latency bounds the queue.
        burst = max(GSO_BURST, int(self.rate_bps / 8 / 1000))
        tbf = ["tbf", "rate", self.link, "burst", str(burst), "latency", "100ms"]
        tc = ["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", IFACE]
        if self.delay or self.loss:
            netem = (
                ["netem"]
                + (["delay", self.delay] if self.delay else [])
                + (["loss", self.loss] if self.loss else [])
            )
            proc = sh(*tc, "root", "handle", "1:", *netem, check=False)
            if proc.returncode != 0:
                raise UsageError(
                    f"tc cannot add delay/loss here ({proc.stderr.strip()[:80]}): this kernel "
                    "lacks the netem qdisc; run without --delay/--loss"
                )
            sh(*tc, "parent", "1:1", "handle", "10:", *tbf)
        else:
            sh(*tc, "root", *tbf)

    def cut(self, i: int) -> None:
        """Cut host i's cable: its bridge-side veth goes down, so nothing passes either way."""
        sh("ip", "link", "set", f"{self.prefix}-v{i}", "down")

    def tx_bytes(self, i: int) -> int:
        path = f"/sys/class/net/{IFACE}/statistics/tx_bytes"
        return int(sh("ip", "netns", "exec", self.ns(i), "cat", path).stdout)

    def __enter__(self) -> Cluster:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()
