"""The domain: values, ids, limits, the lease book, preemption, the audit chain, clocks.

No I/O.
"""
