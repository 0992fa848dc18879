"""Training: losses (`losses`), augmentations (`augment`), data, the recipe and DDP.

Import the submodules you need; this package imports nothing so that `pipeline.train.losses`
stays cheap and never pulls in the trainer.
"""
