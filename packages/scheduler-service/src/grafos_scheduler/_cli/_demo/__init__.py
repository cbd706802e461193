"""The end-to-end demo: a service, worker processes, preemption, resume, verification."""
