"""Slurm: a run submitted as a batch job, followed and cancelled from the login node."""
