"""Model components, registered into mmdet.registry.MODELS on import."""
