"""TensorRT: the runner (runner), its plans built through Polygraphy's loaders (engines), the build
profiles in engines/profiles/*.yaml (profiles), the plan cache (cache), CUDA driver calls (cuda_driver) and
trtexec's exported outputs (trtexec)."""
