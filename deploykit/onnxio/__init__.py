"""ONNX files: writing a ConvTranspose model and its inputs for a spec (write), and reading any model's
ConvTranspose nodes back into specs (read)."""
