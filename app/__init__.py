"""HTTP layer: routers, schemas, settings, auth, errors, lifespan, CLI."""
