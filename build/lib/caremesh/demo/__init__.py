"""The demo: the whole platform on the local broker, fed by a synthetic territory."""
