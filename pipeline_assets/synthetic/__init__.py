"""datasets/synthetic: teacher-generated, verifier-filtered training data (and its collapse guard)."""
