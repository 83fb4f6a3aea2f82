"""Conformance runs: matrices expanded into specs (matrix), a run over backends (run), and outputs
produced elsewhere judged on the same path (judge, answers)."""
