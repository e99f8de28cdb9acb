"""The full-screen terminal client (Textual): ``instantroom chat``."""
