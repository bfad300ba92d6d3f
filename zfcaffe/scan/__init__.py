"""Scans: one job run over every batch of a list of images, on this machine or on a
Ray cluster, with results in input order and identical either way.

A job (scan.job.Job) says what to compute from one batch; an engine (scan.engines)
says where: "local" runs the net already built in this process, decoding the next
batch on threads while this one runs; "ray" runs the same job on Ray Data actors that
each hold one runtime session. Both cut the list into the same padded batches, so
each image meets the same kernels, and the results are the same bits.
"""
from .engines import Engine, ENGINES
from .job import Job

__all__ = ["Engine", "ENGINES", "Job"]
