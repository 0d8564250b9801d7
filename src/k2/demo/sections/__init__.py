"""One module per section of the demo; each ``run(ctx)`` narrates and records its checks."""
