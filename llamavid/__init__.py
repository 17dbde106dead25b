"""llamavid."""
