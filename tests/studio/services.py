"""`make_services`: the studio's three services for a test, built as app.py builds them (one store)."""
from __future__ import annotations


def make_services(depth, *, curation=None, training=None):
    """Services over `depth` (a DepthService); the curation and training services a test does not give
    are made over the label store of depth's settings."""
    from pipeline.services.curation_service import CurationService
    from pipeline.services.training_service import TrainingService
    from pipeline.store import Store
    from studio.app import Services
    settings = depth.settings.ensure_dirs()
    store = None
    if curation is None or training is None:
        store = Store(settings.database)
    return Services(depth=depth, curation=curation or CurationService(store, settings),
                    training=training or TrainingService(store, settings, depth, gpus=0))
