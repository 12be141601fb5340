"""Emulated multi-host clusters on one machine: hosts and links (`netns`), jobs on them
(`launch`), the all-reduce benchmark between them (`bench`), and a real Slurm cluster on them
(`slurm`)."""

from dist_sqz.cluster.netns import Cluster, namespaces_permitted

__all__ = ["Cluster", "namespaces_permitted"]
