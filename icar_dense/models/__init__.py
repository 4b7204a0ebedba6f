"""Backbones, heads and text towers; ``backbones``, ``heads`` and ``text``
are imported on first use (``icar_dense.det`` / ``.seg`` / ``.action``
import what their task needs)."""
