"""The ConvTranspose operator itself: its spec, the float64 reference, the per-element error bound, the hazards
that runtimes get wrong, and the verdict on one output.

Nothing here knows about runtimes, files or runs: it imports only itself and deploykit.vocabulary, so the maths can
be read, tested and reused alone (tests/project/test_layers.py holds that)."""
