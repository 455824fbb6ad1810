"""The shared core both heads stand on: backbone (layer taps, fingerprint, default concept
layers), images (decoding any image a user has), config (YAML → dataclasses), io (atomic writes,
safe torch.load), errors (one-line user errors), cli (the tools' plumbing). It imports nothing
else of the project."""
