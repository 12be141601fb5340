"""Cluster specs: one YAML file describes a real system for the cost model.

A spec names each physical quantity the model uses (docs/cost-model.md explains every term):

    name: dgx1-v100-edr            # free text
    gpus_per_node: 8
    intra:                         # the fabric inside a node
      fabric: NVLink 2 hybrid cube mesh
      line_rate: 150gbps           # per GPU, each way (tc's units: gbps = GB/s, gbit = Gbit/s)
      achieved: 0.8                # all-reduce bus bandwidth / line rate (nccl-tests' busBw)
      busbw_curve: {}              # or measured: {64MB: 110gbps, 1GB: 121gbps} (wins if set)
      latency: 5us                 # per ring hop
    inter:                         # the network between nodes
      nics: 1                      # per node
      nic_rate: 100gbit            # each
      transport: rdma              # rdma | tcp
      achieved: 0.85               # rdma: busbw / line rate; tcp: payload / frame (1448/1514)
      flow_cap: 0                  # tcp: the most one flow (socket) reaches; 0 = no cap
      flows: 1                     # flows per NIC
      latency: 10us
      busbw_curve: {}
    collective:
      algorithm: ring              # ring | hierarchical | tree | ps
      overhead: 20us               # per collective: launch and bookkeeping
    framework:
      kind: ddp                    # ddp (buckets) | horovod (fusion buffer + cycle)
      bucket_cap_mb: 25            # DDP
      first_bucket_mb: 1           # DDP (default: as torch does, 1 MiB with the default cap)
      fusion_mb: 64                # Horovod (<= 0.20: 64; >= 0.21: 128)
      cycle_time: 5ms              # Horovod (<= 0.20: 5 ms; >= 0.21: 1 ms)
      step_overhead: 0.04          # extra compute share at N >= 2 (1-GPU figures run without)
    interference: 0.1              # share by which backward slows while a collective runs
    sources: {key: where the figure comes from}

Unknown keys, bad units and out-of-range values are UsageErrors of one line. The strings
keep what the file says (summaries print them); each level's `si` holds its numbers in SI
units (bytes/s, seconds), parsed once when the spec is built: all the model's arithmetic reads.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from dist_sqz.errors import UsageError
from dist_sqz.units import parse_duration, parse_rate, parse_size, valid_duration, valid_rate

_PACKAGE_DATA = "dist_sqz.costmodel.cluster_data"
TCP_FRAMING = 1448 / 1514  # TCP payload per Ethernet frame: MTU 1500, timestamps on


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)
    _si: Any = PrivateAttr(None)

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> Any:
        """A copy validated again, so that its `si` follows the updated strings (and a bad
        update is refused as a file's would be)."""
        return type(self).model_validate({**dict(self), **(update or {})})


class LevelSI(NamedTuple):
    """A fabric's or a network's numbers: bytes/s of the level (all its NICs', before any
    curve), seconds per hop, and the measured curve as (bytes, bytes/s) points by size."""

    busbw_Bps: float
    latency_s: float
    curve: tuple[tuple[float, float], ...]


def _points(curve: dict[str, str]) -> tuple[tuple[float, float], ...]:
    return tuple(sorted((parse_size(s), parse_rate(r) / 8) for s, r in curve.items()))


def _curve(v: dict[str, str]) -> dict[str, str]:
    for size, rate in v.items():
        parse_size(size)
        parse_rate(rate)
    return v


def has_flow_cap(inter: Network) -> bool:
    return inter.flow_cap.strip() not in ("0", "0bit")


class Fabric(_Strict):
    """Inside a node."""

    fabric: str = "NVLink 4"
    line_rate: str = "450gbps"
    achieved: float = Field(0.8, gt=0, le=1)
    busbw_curve: dict[str, str] = {}
    latency: str = "2us"

    _r = field_validator("line_rate")(valid_rate)
    _d = field_validator("latency")(valid_duration)
    _c = field_validator("busbw_curve")(_curve)

    def model_post_init(self, _context: Any) -> None:
        rate = parse_rate(self.line_rate) / 8 * self.achieved
        self._si = LevelSI(rate, parse_duration(self.latency), _points(self.busbw_curve))

    @property
    def si(self) -> LevelSI:
        return self._si


class Network(_Strict):
    """Between nodes."""

    nics: int = Field(1, ge=1)
    nic_rate: str = "100gbit"
    transport: Literal["rdma", "tcp"] = "tcp"
    achieved: float = Field(TCP_FRAMING, gt=0, le=1)
    flow_cap: str = "0bit"
    flows: int = Field(1, ge=1)
    latency: str = "5us"
    busbw_curve: dict[str, str] = {}

    @field_validator("nic_rate")
    @classmethod
    def _nic(cls, v: str) -> str:
        return valid_rate(v)

    @field_validator("flow_cap")
    @classmethod
    def _cap(cls, v: str) -> str:
        return v if v.strip() in ("0", "0bit") else valid_rate(v)

    _d = field_validator("latency")(valid_duration)
    _c = field_validator("busbw_curve")(_curve)

    def model_post_init(self, _context: Any) -> None:
        """The node's bytes/s out (and in) for all-reduce traffic: all of its NICs, each at
        its achieved share, and under TCP at most `flows` x the flow cap."""
        per_nic = parse_rate(self.nic_rate) / 8 * self.achieved
        if self.transport == "tcp" and has_flow_cap(self):
            per_nic = min(per_nic, self.flows * parse_rate(self.flow_cap) / 8)
        latency = parse_duration(self.latency)
        self._si = LevelSI(self.nics * per_nic, latency, _points(self.busbw_curve))

    @property
    def si(self) -> LevelSI:
        return self._si


class Collective(_Strict):
    algorithm: Literal["ring", "hierarchical", "tree", "ps"] = "ring"
    overhead: str = "0us"

    _d = field_validator("overhead")(valid_duration)

    def model_post_init(self, _context: Any) -> None:
        self._si = parse_duration(self.overhead)

    @property
    def overhead_s(self) -> float:
        return self._si


class Framework(_Strict):
    kind: Literal["ddp", "horovod"] = "ddp"
    bucket_cap_mb: float = Field(25.0, gt=0)
    first_bucket_mb: float | None = Field(None, gt=0)  # None: as torch (1 MiB at cap 25)
    fusion_mb: float = Field(64.0, ge=0)
    cycle_time: str = "5ms"
    step_overhead: float = Field(0.0, ge=0, lt=1)

    _d = field_validator("cycle_time")(valid_duration)

    def model_post_init(self, _context: Any) -> None:
        self._si = parse_duration(self.cycle_time)

    @property
    def cycle_s(self) -> float:
        return self._si


class ClusterSpec(_Strict):
    name: str = "custom"
    description: str = ""
    gpus_per_node: int = Field(1, ge=1)
    intra: Fabric = Fabric()
    inter: Network = Network()
    collective: Collective = Collective()
    framework: Framework = Framework()
    interference: float = Field(0.0, ge=0, lt=1)
    sources: dict[str, str] = {}

    def summary(self) -> str:
        inter = self.inter
        return (
            f"{self.name}: {self.gpus_per_node} GPU/node, {self.intra.fabric} "
            f"x{self.intra.achieved:g}; {inter.nics} x {inter.nic_rate} {inter.transport} "
            f"x{inter.achieved:.3g}{f' (flow cap {inter.flow_cap})' if has_flow_cap(inter) else ''}"
            f"; {self.collective.algorithm}, {self.framework.kind}"
        )


def shipped() -> list[str]:
    """Names of the cluster specs that ship with the package."""
    root = resources.files(_PACKAGE_DATA)
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


def load_spec(name: str) -> ClusterSpec:
    """A shipped spec by name, or a YAML file by path; UsageError says what is wrong."""
    if name.endswith((".yaml", ".yml")):
        path = Path(name)
        if not path.is_file():
            raise UsageError(f"cluster spec {name!r} not found")
        where, text = name, path.read_text()
    elif name in shipped():
        where = name
        text = resources.files(_PACKAGE_DATA).joinpath(f"{name}.yaml").read_text()
    else:
        raise UsageError(
            f"no cluster spec {name!r}; shipped: {', '.join(shipped())} (or a path to a .yaml "
            "file, docs/cost-model.md)"
        )
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        raise UsageError(f"cluster spec {where} is not valid YAML{line}") from None
    if not isinstance(data, dict):
        raise UsageError(f"cluster spec {where} must hold a mapping of key: value")
    return build_spec(data, where)


def build_spec(data: dict[str, Any], where: str = "spec") -> ClusterSpec:
    try:
        return ClusterSpec(**data)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(k) for k in err["loc"]) or "spec"
        if err["type"] == "extra_forbidden":
            raise UsageError(f"cluster spec {where}: unknown key {key!r}") from None
        if err["type"] == "value_error":
            msg = str(err.get("ctx", {}).get("error", err["msg"]))
        else:
            msg = f"{err['msg'].lower()}; got {err.get('input')!r}"
        raise UsageError(f"cluster spec {where}: {key}: {msg}") from None


def from_flags(
    link: str,
    latency: str = "5us",
    topology: str = "ring",
    gpus_per_node: int = 8,
    intra_link: str = "3600gbit",
    transport: str = "tcp",
    bucket_cap_mb: float = 25.0,
) -> ClusterSpec:
    """The spec `simulate`'s flags describe: one worker per node unless hierarchical; TCP
    framing on the link (`transport: ideal` leaves the nominal rate, the old model)."""
    achieved = TCP_FRAMING if transport == "tcp" else 1.0
    hierarchical = topology == "hierarchical"
    return build_spec(
        {
            "name": f"{link} {transport}",
            "gpus_per_node": gpus_per_node if hierarchical else 1,
            "intra": {"fabric": "node link", "line_rate": intra_link, "achieved": 1.0},
            "inter": {
                "nics": gpus_per_node if hierarchical else 1,  # one link per worker
                "nic_rate": link,
                "transport": "tcp" if transport == "tcp" else "rdma",
                "achieved": achieved,
                "latency": latency,
            },
            "collective": {"algorithm": topology},
            "framework": {"bucket_cap_mb": bucket_cap_mb},
        },
        "from flags",
    )
