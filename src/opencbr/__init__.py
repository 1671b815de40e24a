"""OpenCBR: a self-hosted Cloud Backup and Recovery service, wire-compatible with the CBR v3 API."""

__version__ = "0.2.0"
