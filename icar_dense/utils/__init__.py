"""Small helpers shared by the tools (``init_logging``)."""
