"""The shared core both heads stand on: backbone (the registry's front door: build by name, default
concept layers and sizes; backbone_registry, backbone_builders, backbone_weights, feature_extractor:
layer taps, fingerprint), images (decoding any image a user has), config (YAML → dataclasses), io
(atomic writes, safe torch.load), errors (one-line user errors), cli (the tools' plumbing). It
imports nothing else of the project."""
