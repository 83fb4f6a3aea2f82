"""Running one backend on one case and surviving it: probe -> load -> activate -> infer -> judge
(execute), crash isolation in a child process (isolation), the worker pool (harness), signals and stop
requests (liveness), and memory budgets (resources)."""
