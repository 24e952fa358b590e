"""RQ jobs and worker processes: store records, sample GPUs and runtimes, run scheduled sweeps."""
