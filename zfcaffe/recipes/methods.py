"""The survey's methods as verbs (filled in by the methods' recipes)."""
