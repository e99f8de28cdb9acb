"""InstantRoom: private group chat rooms with keys handed over by hand."""

__version__ = "0.1.0"
