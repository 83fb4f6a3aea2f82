"""`deploykit export`: a PyTorch decoder to ONNX, verified as a whole and layer by layer."""
