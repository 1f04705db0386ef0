"""Attention backends, one module each, found by ``attention.backends_in_order()``.

A backend module defines ``PRIORITY`` (higher is tried first), ``accepts(query, softcap)``
and ``attend(q, k, v, piece_ks, piece_vs, segments, scale, softcap)``: q [H, T, d] and k/v
[KVH, T, d] are the packed suffixes of one forward, ``piece_ks``/``piece_vs`` the shared
prefix pieces [KVH, P_i, d] every packed token attends to, ``segments`` the (start, length)
of each packed row (causal within itself only).  It returns out [H, T, d] (any float dtype).
Adding a backend is adding a module here.
"""
