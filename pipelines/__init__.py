"""DPRM pipelines: Prefect flows, the `dprm` CLI and the margin service."""
