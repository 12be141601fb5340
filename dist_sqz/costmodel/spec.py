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

Unknown keys, bad units and out-of-range values are UsageErrors of one line.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dist_sqz.errors import UsageError
from dist_sqz.units import parse_rate, parse_size, valid_duration, valid_rate

_PACKAGE_DATA = "dist_sqz.costmodel.cluster_data"
TCP_FRAMING = 1448 / 1514  # TCP payload per Ethernet frame: MTU 1500, timestamps on


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


def _curve(v: dict[str, str]) -> dict[str, str]:
    for size, rate in v.items():
        parse_size(size)
        parse_rate(rate)
    return v


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


class Collective(_Strict):
    algorithm: Literal["ring", "hierarchical", "tree", "ps"] = "ring"
    overhead: str = "0us"

    _d = field_validator("overhead")(valid_duration)


class Framework(_Strict):
    kind: Literal["ddp", "horovod"] = "ddp"
    bucket_cap_mb: float = Field(25.0, gt=0)
    first_bucket_mb: float | None = Field(None, gt=0)  # None: as torch (1 MiB at cap 25)
    fusion_mb: float = Field(64.0, ge=0)
    cycle_time: str = "5ms"
    step_overhead: float = Field(0.0, ge=0, lt=1)

    _d = field_validator("cycle_time")(valid_duration)


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


def has_flow_cap(inter: Network) -> bool:
    return inter.flow_cap.strip() not in ("0", "0bit")


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
