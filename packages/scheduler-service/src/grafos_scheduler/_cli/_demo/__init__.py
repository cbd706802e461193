"""The ``grafos-scheduler demo`` command: service, worker processes, preemption, resume,
verification.

Its modules import only public names of grafos_scheduler and grafos_pipeline (and the
CLI's shared log formatter). This package imports nothing itself: a spawned worker
process loads ``_worker`` alone, without the server half that ``_orchestration`` needs.
"""
