"""HTTP blueprints, one per API family: predict, models, health."""
