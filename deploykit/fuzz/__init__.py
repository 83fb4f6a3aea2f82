"""Finding what a fixed matrix misses: Hypothesis search and shrinking over ConvTranspose configs
(`deploykit conformance fuzz`), grouped into failure classes."""
