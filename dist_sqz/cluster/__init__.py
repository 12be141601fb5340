"""An emulated multi-host cluster on one machine: network namespaces, veth links, a bridge.

Host i is namespace `<prefix>-h<i>` with interface `eth0` at 10.213.0.<i+1>/24, its veth
peer enslaved to bridge `<prefix>-br` in the root namespace (which gets no address: the
addresses exist only inside namespaces this module created). Each host's egress is shaped
with `tc`: tbf at `link` rate, and netem for optional delay and loss. Commands run on every
host as one torchrun multi-node job (c10d rendezvous on host 0). `down()` always runs: on
success, failure, timeout and signals; `up()` first removes a stale cluster of the same
prefix left by a killed run.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dist_sqz.errors import UsageError

SUBNET = "10.213.0"
RDZV_PORT = 29400
IFACE = "eth0"
_GSO_BURST = 2**17  # bytes: one 64 KiB GSO segment with room to spare
_RATE = re.compile(r"^(\d+(?:\.\d+)?)([kmg]?)(bit|bps)$", re.IGNORECASE)


def parse_rate(rate: str) -> float:
    """'1gbit' -> 1e9 bits/s (tc's units: kbit, mbit, gbit; bps = bytes/s)."""
    m = _RATE.match(rate.strip())
    if not m:
        raise UsageError(f"link rate {rate!r} is not like 100mbit or 1gbit")
    value = float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2).lower()]
    return value * (8 if m.group(3).lower() == "bps" else 1)


def _sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
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
    probe = f"dsqzprobe{os.getpid()}"
    proc = _sh("ip", "netns", "add", probe, check=False)
    if proc.returncode != 0:
        return False, f"cannot create network namespaces ({proc.stderr.strip()[:100]})"
    _sh("ip", "netns", "del", probe, check=False)
    return True, ""


@dataclass
class Cluster:
    hosts: int
    link: str = "1gbit"
    delay: str = ""
    loss: str = ""
    prefix: str = "dsqz"
    max_restarts: int = 0  # torchrun's elastic restarts of failed workers

    def __post_init__(self) -> None:
        if not 1 <= self.hosts <= 250:
            raise UsageError(f"--hosts must be between 1 and 250, got {self.hosts}")
        if self.max_restarts < 0:
            raise UsageError(f"--max-restarts must be >= 0, got {self.max_restarts}")
        self.rate_bps = parse_rate(self.link)
        if not re.fullmatch(r"[a-z][a-z0-9]{0,7}", self.prefix):
            raise UsageError("cluster prefix must be 1-8 lowercase letters or digits")
        self.up_ = False
        self.job_id = uuid.uuid4().hex[:12]

    # -- names ----------------------------------------------------------------------------
    def ns(self, i: int) -> str:
        return f"{self.prefix}-h{i}"

    def addr(self, i: int) -> str:
        return f"{SUBNET}.{i + 1}"

    @property
    def bridge(self) -> str:
        return f"{self.prefix}-br"

    # -- lifecycle ------------------------------------------------------------------------
    def stale(self) -> list[str]:
        names = _sh("ip", "netns", "list", check=False).stdout.split("\n")
        return [n.split()[0] for n in names if n.startswith(f"{self.prefix}-h")]

    def down(self) -> None:
        """Delete every namespace and link of this prefix (deleting a namespace deletes its
        veth pair). Safe to call any number of times."""
        for ns in self.stale():
            for pid in _sh("ip", "netns", "pids", ns, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            _sh("ip", "netns", "del", ns, check=False)
        for link in re.findall(
            rf"\d+: ({self.prefix}-[a-z0-9]+)[@:]",
            _sh("ip", "-o", "link", "show", check=False).stdout,
        ):
            _sh("ip", "link", "del", link, check=False)
        self.up_ = False

    def up(self) -> None:
        ok, why = namespaces_permitted()
        if not ok:
            raise UsageError(f"cannot emulate a cluster here: {why}")
        self.down()  # a stale cluster from a killed run
        try:
            _sh("ip", "link", "add", self.bridge, "type", "bridge")
            _sh("ip", "link", "set", self.bridge, "up")
            for i in range(self.hosts):
                ns, veth = self.ns(i), f"{self.prefix}-v{i}"
                _sh("ip", "netns", "add", ns)
                _sh("ip", "link", "add", veth, "type", "veth", "peer", "name", IFACE, "netns", ns)
                _sh("ip", "link", "set", veth, "master", self.bridge, "up")
                _sh("ip", "-n", ns, "addr", "add", f"{self.addr(i)}/24", "dev", IFACE)
                _sh("ip", "-n", ns, "link", "set", IFACE, "up")
                _sh("ip", "-n", ns, "link", "set", "lo", "up")
                self._shape(ns)
            self.up_ = True
        except BaseException:
            self.down()
            raise

    def _shape(self, ns: str) -> None:
        # burst: ~1 ms at the rate, and never below one 64 KiB GSO segment. With a smaller
        # bucket tbf cuts every TCP segment down to MTU-sized packets in software, and on a
        # few cores that per-packet work, not the rate, then caps 8 hosts at ~0.65 x the
        # link. latency bounds the queue.
        burst = max(_GSO_BURST, int(self.rate_bps / 8 / 1000))
        tbf = ["tbf", "rate", self.link, "burst", str(burst), "latency", "100ms"]
        tc = ["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", IFACE]
        if self.delay or self.loss:
            netem = (
                ["netem"]
                + (["delay", self.delay] if self.delay else [])
                + (["loss", self.loss] if self.loss else [])
            )
            proc = _sh(*tc, "root", "handle", "1:", *netem, check=False)
            if proc.returncode != 0:
                raise UsageError(
                    f"tc cannot add delay/loss here ({proc.stderr.strip()[:80]}): this kernel "
                    "lacks the netem qdisc; run without --delay/--loss"
                )
            _sh(*tc, "parent", "1:1", "handle", "10:", *tbf)
        else:
            _sh(*tc, "root", *tbf)

    def cut(self, i: int) -> None:
        """Cut host i's cable: its bridge-side veth goes down, so nothing passes either way."""
        _sh("ip", "link", "set", f"{self.prefix}-v{i}", "down")

    def tx_bytes(self, i: int) -> int:
        out = _sh(
            "ip", "netns", "exec", self.ns(i), "cat", f"/sys/class/net/{IFACE}/statistics/tx_bytes"
        ).stdout
        return int(out)

    def __enter__(self) -> Cluster:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    # -- running --------------------------------------------------------------------------
    def torchrun_argv(self, i: int, args: Sequence[str], nproc: int = 1) -> list[str]:
        return [
            "ip",
            "netns",
            "exec",
            self.ns(i),
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nnodes={self.hosts}",
            f"--node-rank={i}",
            f"--nproc-per-node={nproc}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={self.addr(0)}:{RDZV_PORT}",
            # Unique per cluster: torchrun hands it to workers as TORCHELASTIC_RUN_ID, which
            # tells a restarted worker that the run directory is its own job's.
            f"--rdzv-id={self.prefix}-{self.job_id}",
            f"--local-addr={self.addr(i)}",
            # Namespaces share the machine's hostname, so say outright who hosts the store.
            f"--rdzv-conf=is_host={int(i == 0)}",
            f"--max-restarts={self.max_restarts}",
            *args,
        ]

    def run(
        self,
        args: Sequence[str],
        timeout_s: float = 600,
        log_dir: Path | None = None,
        env: dict[str, str] | None = None,
        nproc: int = 1,
        grace_s: float = 30,
    ) -> list[int]:
        """Start `torchrun ... args` on every host; wait; return each host's exit status.

        Each host's output goes to `log_dir/host<i>.log`; with no `log_dir`, host 0's goes to
        this process's stdout and the others' is dropped.

        On timeout every host's processes are killed and the statuses are 124. Once a host
        fails, the others get `grace_s` to finish (a host cut off from the rendezvous store
        would wait on it far longer), then are killed with status 137.
        """
        if not self.up_:
            raise RuntimeError("cluster is not up")
        env = {
            **os.environ,
            **(env or {}),
            "GLOO_SOCKET_IFNAME": IFACE,
            "DIST_SQZ_WIRE_IFACE": IFACE,
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        }
        procs = []
        for i in range(self.hosts):
            # Without a log folder, host 0 speaks on our stdout and the others stay quiet.
            out = None if i == 0 else subprocess.DEVNULL
            if log_dir is not None:
                log_dir.mkdir(parents=True, exist_ok=True)
                out = (log_dir / f"host{i}.log").open("w")
            procs.append(
                subprocess.Popen(
                    self.torchrun_argv(i, args, nproc),
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        deadline = time.monotonic() + timeout_s
        codes: list[int | None] = [None] * len(procs)
        killed_code = 124
        try:
            while any(c is None for c in codes):
                for k, p in enumerate(procs):
                    if codes[k] is None:
                        codes[k] = p.poll()
                now = time.monotonic()
                if any(c not in (None, 0) for c in codes) and now + grace_s < deadline:
                    deadline, killed_code = now + grace_s, 137
                if now > deadline:
                    break
                time.sleep(0.1)
        finally:
            for k, p in enumerate(procs):
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
                    codes[k] = killed_code
        return [int(c) for c in codes]
