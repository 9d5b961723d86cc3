"""The engine: Gatys et al.'s style transfer on tensors. It knows torch, torchvision and numpy,
and nothing of files, folders or jobs (tests/test_layout.py holds it to that).

Empty on purpose: importing `daemon.engine.settings` (as the config does) must not load torch.
"""
