"""Device memory under a budget: what is measured (``meters``), the allocator kept honest
(``allocator``), and what stops an evaluation for want of memory (``errors``). Batches are
sized by the engine's planner (``engine/planner.py``)."""
