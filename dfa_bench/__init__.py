"""dfa-bench: train modern deep networks with Direct Feedback Alignment, backprop, or a shallow baseline."""

__version__ = "0.1.0"
