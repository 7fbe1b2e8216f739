"""Architectures of every task. Models mark their feedback points (`dfa_bench.marks`); they never know the method."""
