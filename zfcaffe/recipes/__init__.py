"""End-to-end recipes built from the primitives (net, backward engine, viz)."""
