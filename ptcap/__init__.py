"""ptcap: process-aware packet capture on eBPF."""

__version__ = "0.1.0"
